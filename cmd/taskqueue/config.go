package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/taskqueue/taskqueue/adapters/handlers"
	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/domain"
)

// envPrefix starts the environment variable of every setting.
const envPrefix = "TASKQUEUE_"

// config is every setting, parsed once from flags and the environment.
type config struct {
	Addr            string
	Workers         int
	QueueSize       int
	MaxBodyBytes    int64
	RetryPolicy     domain.RetryPolicy
	TaskTimeout     time.Duration
	Retention       time.Duration
	MaxFinished     int
	ShutdownTimeout time.Duration
	Webhooks        []webhookSpec
	LogLevel        string
	LogFormat       string
	Broker          string
	RedisURL        string
	RedisPrefix     string
	Lease           time.Duration
}

// Brokers the service can run on.
const (
	brokerMemory = "memory"
	brokerRedis  = "redis"
)

type webhookSpec struct {
	Type, URL string
}

// webhookFlag collects repeated --handler TYPE=URL values.
type webhookFlag struct{ specs *[]webhookSpec }

func (f webhookFlag) String() string {
	if f.specs == nil {
		return ""
	}
	parts := make([]string, len(*f.specs))
	for i, s := range *f.specs {
		parts[i] = s.Type + "=" + s.URL
	}
	return strings.Join(parts, ",")
}

func (f webhookFlag) Set(v string) error {
	typ, url, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q is not TYPE=URL", v)
	}
	if err := domain.ValidateType(typ); err != nil {
		return err
	}
	if _, err := handlers.NewWebhook(url, nil); err != nil {
		return err
	}
	for _, s := range *f.specs {
		if s.Type == typ {
			return fmt.Errorf("type %q is given twice", typ)
		}
	}
	*f.specs = append(*f.specs, webhookSpec{Type: typ, URL: url})
	return nil
}

// errHelp asks for the usage text and a clean exit.
var errHelp = errors.New("help requested")

// parseConfig reads flags from args, then fills each flag not given from
// its TASKQUEUE_<NAME> environment variable. A flag wins over the
// environment. It returns errHelp for --help, and an error naming the
// setting for anything invalid.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	var cfg config
	var retryInitial, retryMax time.Duration
	fs := flag.NewFlagSet("taskqueue", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Addr, "addr", ":8080", "address the HTTP API listens on")
	fs.IntVar(&cfg.Workers, "workers", 5, "task attempts run at once")
	fs.IntVar(&cfg.QueueSize, "queue-size", 10000, "most pending tasks; more submissions get 503")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", httpapi.DefaultMaxBodyBytes, "largest request body in bytes; larger gets 413")
	fs.DurationVar(&retryInitial, "retry-initial-backoff", time.Second, "wait after the first failed attempt; doubles each retry")
	fs.DurationVar(&retryMax, "retry-max-backoff", 5*time.Minute, "longest wait between attempts")
	fs.DurationVar(&cfg.TaskTimeout, "task-timeout", 30*time.Second, "deadline of one attempt")
	fs.DurationVar(&cfg.Retention, "retention", time.Hour, "how long finished tasks can still be read")
	fs.IntVar(&cfg.MaxFinished, "max-finished", 100000, "most finished tasks kept for reading; past it the oldest are forgotten early (0: no cap)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long shutdown waits for running attempts")
	fs.Var(webhookFlag{&cfg.Webhooks}, "handler", "TYPE=URL: run tasks of TYPE by POSTing them to URL (repeatable; the variable takes t1=url1,t2=url2)")
	fs.StringVar(&cfg.Broker, "broker", brokerMemory, "where tasks are kept: memory (this process only) or redis (shared by every instance, durable)")
	fs.StringVar(&cfg.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis to use with --broker redis")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", "taskqueue", "names the queue in Redis: keys are {PREFIX}:...; instances with the same prefix share it")
	fs.DurationVar(&cfg.Lease, "lease", 30*time.Second, "with --broker redis: how long a running attempt's instance may go silent before another instance recovers the task (at least 1s)")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", logging.FormatText, "text or json (one JSON object per line)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, usage)
			return cfg, errHelp
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (settings are flags: see --help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		values := []string{v}
		if f.Name == "handler" {
			values = strings.Split(v, ",")
		}
		for _, val := range values {
			if err := f.Value.Set(strings.TrimSpace(val)); err != nil {
				envErr = fmt.Errorf("invalid value %q for %s: %v", val, name, err)
				return
			}
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	err := cfg.validate(retryInitial, retryMax)
	var ve *domain.ValidationError
	if errors.As(err, &ve) && !given[ve.Field] && getenv(envName(ve.Field)) != "" {
		return cfg, fmt.Errorf("%s (from %s)", err, envName(ve.Field))
	}
	return cfg, err
}

// invalid reports a bad setting by its flag name.
func invalid(flag, format string, args ...any) error {
	return &domain.ValidationError{Field: flag, Problem: fmt.Sprintf(format, args...)}
}

func (c *config) validate(retryInitial, retryMax time.Duration) error {
	var err error
	switch {
	case c.Workers < 1:
		return invalid("workers", "must be at least 1, got %d", c.Workers)
	case c.QueueSize < 1:
		return invalid("queue-size", "must be at least 1, got %d", c.QueueSize)
	case c.MaxBodyBytes < 1:
		return invalid("max-body-bytes", "must be at least 1, got %d", c.MaxBodyBytes)
	case c.TaskTimeout <= 0:
		return invalid("task-timeout", "must be positive, got %s", c.TaskTimeout)
	case c.Retention < 0:
		return invalid("retention", "must not be negative, got %s", c.Retention)
	case c.MaxFinished < 0:
		return invalid("max-finished", "must not be negative, got %d", c.MaxFinished)
	case c.ShutdownTimeout < 0:
		return invalid("shutdown-timeout", "must not be negative, got %s", c.ShutdownTimeout)
	case c.Broker != brokerMemory && c.Broker != brokerRedis:
		return invalid("broker", "must be memory or redis, got %q", c.Broker)
	case c.Lease < time.Second:
		return invalid("lease", "must be at least 1s, got %s", c.Lease)
	case c.Broker == brokerRedis && c.RedisPrefix == "":
		return invalid("redis-prefix", "must not be empty")
	case c.LogFormat != logging.FormatText && c.LogFormat != logging.FormatJSON:
		return invalid("log-format", "must be text or json, got %q", c.LogFormat)
	}
	for _, w := range c.Webhooks {
		if w.Type == handlers.ExampleType || w.Type == handlers.NoopType {
			return invalid("handler", "type %q is built in and cannot be a webhook", w.Type)
		}
	}
	if _, err = logging.New(io.Discard, c.LogLevel, c.LogFormat); err != nil {
		return invalid("log-level", "%v", strings.TrimPrefix(err.Error(), "log-level: "))
	}
	c.RetryPolicy, err = domain.NewRetryPolicy(retryInitial, retryMax)
	return err
}

// envName maps a flag name to its environment variable.
func envName(flag string) string {
	if flag == "handler" {
		return envPrefix + "HANDLERS"
	}
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: taskqueue [flags]\n\nA task queue with a REST API. Every flag can also be set by the environment\nvariable shown; a flag wins over its variable.\n\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(w, "  --%s (env %s)\n    \t%s", f.Name, envName(f.Name), f.Usage)
		if f.DefValue != "" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
