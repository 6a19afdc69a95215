// Package logging builds the service's logrus logger from its settings.
package logging

import (
	"fmt"
	"io"

	"github.com/sirupsen/logrus"
)

// Formats the logger can write.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// levels are the accepted --log-level values, exactly as documented.
var levels = map[string]logrus.Level{
	"debug": logrus.DebugLevel, "info": logrus.InfoLevel, "warn": logrus.WarnLevel, "error": logrus.ErrorLevel,
}

// New returns a logger writing to out at the named level ("debug",
// "info", "warn", "error") in the named format (FormatText or FormatJSON,
// where every line is one JSON object). It returns an error naming the
// bad value otherwise.
func New(out io.Writer, level, format string) (*logrus.Logger, error) {
	lvl, ok := levels[level]
	if !ok {
		return nil, fmt.Errorf("log-level: must be debug, info, warn or error, got %q", level)
	}
	log := logrus.New()
	log.SetOutput(out)
	log.SetLevel(lvl)
	switch format {
	case FormatText:
		log.SetFormatter(&Formatter{})
	case FormatJSON:
		log.SetFormatter(&Formatter{JSON: true})
	default:
		return nil, fmt.Errorf("log-format: %q is not %q or %q", format, FormatText, FormatJSON)
	}
	return log, nil
}
