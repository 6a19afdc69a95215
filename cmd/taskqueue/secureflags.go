package main

import (
	"fmt"
	"strings"

	"github.com/taskqueue/taskqueue/adapters/handlers"
)

// secretsFlag collects repeated --webhook-secret values. It never shows
// them: String gives only how many there are.
type secretsFlag struct{ secrets *[]string }

func (f secretsFlag) String() string {
	if f.secrets == nil || len(*f.secrets) == 0 {
		return ""
	}
	return fmt.Sprintf("(%d secrets)", len(*f.secrets))
}

func (f secretsFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	if _, err := handlers.ParseSecret(v); err != nil {
		return err
	}
	*f.secrets = append(*f.secrets, v)
	return nil
}
