// Command taskqueue runs the task queue service: a REST API to submit
// tasks, a broker (in memory, or shared on Redis), and a pool of workers.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT or SIGTERM starts a graceful shutdown; a second one
	// ends the process at once, saying what it abandons. SIGHUP reloads
	// the API keys and the TLS certificate.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(signals, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// exitError carries the process exit code for an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode prints err and returns the code to exit with: 0 for none,
// --help or --version, 2 for bad configuration, 128+n after a second
// signal n, 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) || errors.Is(err, errVersion) {
		return 0
	}
	fmt.Fprintln(stderr, "taskqueue:", err)
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}
