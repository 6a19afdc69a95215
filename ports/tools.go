//go:build tools

package ports

// Pins mockgen in go.mod so `go generate` runs the same version everywhere.
import _ "github.com/golang/mock/mockgen"
