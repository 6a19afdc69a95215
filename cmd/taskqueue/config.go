package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/taskqueue/taskqueue/adapters/handlers"
	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/adapters/postgres"
	"github.com/taskqueue/taskqueue/adapters/redis"
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
	FailedRetention time.Duration
	MaxFailed       int
	IdempotencyTTL  time.Duration
	MaxBatch        int
	MaxResultBytes  int64
	MemoryLimit     int64
	ShutdownTimeout time.Duration
	InstanceID      string
	Webhooks        []webhookSpec
	LogLevel        string
	LogFormat       string
	Broker          string
	RedisURL        string
	RedisPrefix     string
	PostgresURL     string
	PostgresSchema  string
	PostgresMigrate bool
	PostgresPoll    bool
	Lease           time.Duration
	// Flow control.
	TypeLimits     map[string]domain.TypeLimits
	KeyConcurrency int
	PriorityAging  time.Duration
	AcceptTypes    []string
	// Security and observability.
	WebhookSecrets []string
	APIKeysFile    string
	TLSCert        string
	TLSKey         string
	MetricsAddr    string
}

// Brokers the service can run on.
const (
	brokerMemory   = "memory"
	brokerRedis    = "redis"
	brokerPostgres = "postgres"
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
	if _, err := handlers.NewWebhook(typ, url, nil, 0); err != nil {
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

// errHelp asks for the usage text and a clean exit; errVersion likewise
// after printing the version.
var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// DefaultShutdownTimeout fits the whole shutdown inside Kubernetes'
// default grace period of 30 s, with room to spare.
const DefaultShutdownTimeout = 25 * time.Second

// byteSize is a flag holding a number of bytes, written as an integer or
// with a unit: 256MiB, 1GiB, 64KiB, 500MB.
type byteSize struct{ n *int64 }

var byteUnits = []struct {
	suffix string
	scale  int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}

func (b byteSize) String() string {
	if b.n == nil {
		return ""
	}
	for _, u := range byteUnits[:3] {
		if *b.n >= u.scale && *b.n%u.scale == 0 && *b.n/u.scale < 1024 {
			return strconv.FormatInt(*b.n/u.scale, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*b.n, 10)
}

func (b byteSize) Set(v string) error {
	num, scale := v, int64(1)
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, scale = n, u.scale
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/scale {
		return fmt.Errorf("%q is not a size in bytes (such as 268435456, 256MiB or 1GiB)", v)
	}
	*b.n = n * scale
	return nil
}

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
	fs.IntVar(&cfg.Workers, "workers", 5, "task attempts run at once; 0 runs an API-only instance that takes submissions and runs nothing")
	fs.IntVar(&cfg.QueueSize, "queue-size", 10000, "most pending tasks; more submissions get 503")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", httpapi.DefaultMaxBodyBytes, "largest request body in bytes; larger gets 413")
	fs.DurationVar(&retryInitial, "retry-initial-backoff", time.Second, "wait after the first failed attempt; doubles each retry")
	fs.DurationVar(&retryMax, "retry-max-backoff", 5*time.Minute, "longest wait between attempts")
	fs.DurationVar(&cfg.TaskTimeout, "task-timeout", 30*time.Second, "deadline of one attempt")
	fs.DurationVar(&cfg.Retention, "retention", time.Hour, "how long finished tasks can still be read")
	fs.IntVar(&cfg.MaxFinished, "max-finished", 100000, "most succeeded tasks kept for reading; past it the oldest are forgotten early (0: no cap)")
	fs.DurationVar(&cfg.FailedRetention, "failed-retention", 7*24*time.Hour, "how long failed and cancelled tasks (dead letters) can still be read and retried")
	fs.IntVar(&cfg.MaxFailed, "max-failed", 100000, "most failed and cancelled tasks kept; past it the oldest are forgotten early (0: no cap)")
	fs.DurationVar(&cfg.IdempotencyTTL, "idempotency-ttl", 24*time.Hour, "how long an Idempotency-Key is remembered after its first request")
	fs.IntVar(&cfg.MaxBatch, "max-batch", 1000, "most tasks in one POST /tasks")
	cfg.MaxResultBytes = 64 << 10
	fs.Var(byteSize{&cfg.MaxResultBytes}, "max-result-bytes", "largest result kept from a handler (a webhook's JSON reply); longer ones are kept cut and flagged")
	cfg.MemoryLimit = 256 << 20
	fs.Var(byteSize{&cfg.MemoryLimit}, "memory-limit", "with --broker memory: most bytes of tasks held (payloads, errors and overhead); finished tasks are forgotten oldest first to make room, then submissions get 503")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout, "the whole shutdown's budget: running attempts get most of it, then they are handed back and everything is closed within it")
	fs.StringVar(&cfg.InstanceID, "instance-id", defaultInstanceID(), "names this instance in every log line and, with Redis, in the state of the attempts it runs (default host:pid)")
	fs.Var(webhookFlag{&cfg.Webhooks}, "handler", "TYPE=URL: run tasks of TYPE by POSTing them to URL (repeatable; the variable takes t1=url1,t2=url2)")
	fs.Var(typesFlag{&cfg.AcceptTypes}, "accept-type", "TYPE: also take submissions of TYPE, which other instances run (repeatable; the variable takes t1,t2)")
	fs.Var(typeLimitsFlag{&cfg.TypeLimits}, "type-limit", "TYPE=concurrency:N,rate:R/PERIOD: at most N attempts of TYPE at once and R started per PERIOD (a token bucket holding R), across every instance sharing the broker; give the same limits to every instance (repeatable; the variable separates entries with ;)")
	fs.Var(keyLimitFlag{&cfg.KeyConcurrency}, "key-limit", "concurrency:N: at most N running attempts per fairness key, across every instance (tasks without a key are not capped)")
	fs.DurationVar(&cfg.PriorityAging, "priority-aging", 0, "a pending task counts one priority level higher for every DURATION it has waited (up to 9), so low priorities are not starved; 0 keeps strict priority order")
	fs.StringVar(&cfg.Broker, "broker", brokerMemory, "where tasks are kept: memory (this process only), redis or postgres (shared by every instance, durable)")
	fs.StringVar(&cfg.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis to use with --broker redis")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", "taskqueue", "names the queue in Redis: keys are {PREFIX}:...; instances with the same prefix share it")
	fs.StringVar(&cfg.PostgresURL, "postgres-url", "postgres://127.0.0.1:5432/taskqueue", "PostgreSQL to use with --broker postgres (a postgres:// URL; pool_max_conns=N sets the pool size, default 16)")
	fs.StringVar(&cfg.PostgresSchema, "postgres-schema", "taskqueue", "names the queue in Postgres: its tables live in this schema; instances with the same schema share it")
	fs.BoolVar(&cfg.PostgresMigrate, "postgres-migrate", true, "apply the schema migrations at start (under an advisory lock); false refuses to start on an older schema (run taskqueue migrate)")
	fs.BoolVar(&cfg.PostgresPoll, "postgres-poll-only", false, "find work by polling every 100ms instead of LISTEN/NOTIFY, for transaction poolers such as PgBouncer where LISTEN does not work")
	fs.DurationVar(&cfg.Lease, "lease", 30*time.Second, "with --broker redis or postgres: how long a running attempt's instance may go silent before another instance recovers the task (at least 1s)")
	fs.Var(secretsFlag{&cfg.WebhookSecrets}, "webhook-secret", "whsec_BASE64: sign every webhook call as Standard Webhooks says (webhook-id, webhook-timestamp, webhook-signature); repeat to sign with several secrets while receivers rotate (the variable separates secrets with , or spaces)")
	fs.StringVar(&cfg.APIKeysFile, "api-keys-file", "", "file of API keys, one \"NAME ROLES SHA256HEX\" per line (see taskqueue keygen); reloaded on SIGHUP. Without it the API is open to anyone who can reach it")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with --tls-key; both reloaded on SIGHUP")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "also serve GET /metrics on this address, without authentication (for a private network); /metrics on --addr stays")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", logging.FormatText, "text or json (one JSON object per line)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, usage)
			return cfg, errHelp
		}
		return cfg, flagError(err)
	}
	if *showVersion {
		fmt.Fprintln(usage, versionLine())
		return cfg, errVersion
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: settings are flags", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil || f.Name == "version" {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		values := []string{v}
		switch f.Name {
		case "handler", "accept-type":
			values = strings.Split(v, ",")
		case "webhook-secret":
			values = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
		case "type-limit":
			values = splitTypeLimits(v)
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
	case c.Workers < 0:
		return invalid("workers", "must not be negative, got %d", c.Workers)
	case c.PriorityAging < 0 || (c.PriorityAging > 0 && c.PriorityAging < time.Millisecond):
		return invalid("priority-aging", "must be 0 (off) or at least 1ms, got %s", c.PriorityAging)
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
	case c.FailedRetention < 0:
		return invalid("failed-retention", "must not be negative, got %s", c.FailedRetention)
	case c.MaxFailed < 0:
		return invalid("max-failed", "must not be negative, got %d", c.MaxFailed)
	case c.IdempotencyTTL < time.Second:
		return invalid("idempotency-ttl", "must be at least 1s, got %s", c.IdempotencyTTL)
	case c.MaxBatch < 1 || c.MaxBatch > 100000:
		return invalid("max-batch", "must be from 1 to 100000, got %d", c.MaxBatch)
	case c.MaxResultBytes < 1 || c.MaxResultBytes > 16<<20:
		return invalid("max-result-bytes", "must be from 1 byte to 16MiB, got %d", c.MaxResultBytes)
	case c.ShutdownTimeout < 0:
		return invalid("shutdown-timeout", "must not be negative, got %s", c.ShutdownTimeout)
	case c.MemoryLimit < 1<<20:
		return invalid("memory-limit", "must be at least 1MiB, got %d bytes", c.MemoryLimit)
	case c.MemoryLimit < c.MaxBodyBytes:
		return invalid("memory-limit", "must be at least --max-body-bytes (%d), got %d bytes", c.MaxBodyBytes, c.MemoryLimit)
	case c.Broker != brokerMemory && c.Broker != brokerRedis && c.Broker != brokerPostgres:
		return invalid("broker", "must be memory, redis or postgres, got %q", c.Broker)
	case c.Lease < time.Second:
		return invalid("lease", "must be at least 1s, got %s", c.Lease)
	case c.Broker == brokerRedis && c.RedisPrefix == "":
		return invalid("redis-prefix", "must not be empty")
	case c.LogFormat != logging.FormatText && c.LogFormat != logging.FormatJSON:
		return invalid("log-format", "must be text or json, got %q", c.LogFormat)
	}
	if err := validAddr(c.Addr); err != nil {
		return invalid("addr", "%v", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		if c.TLSCert == "" {
			return invalid("tls-cert", "is needed with --tls-key")
		}
		return invalid("tls-key", "is needed with --tls-cert")
	}
	if c.MetricsAddr != "" {
		if err := validAddr(c.MetricsAddr); err != nil {
			return invalid("metrics-addr", "%v", err)
		}
	}
	if err := validInstanceID(c.InstanceID); err != nil {
		return invalid("instance-id", "%v", err)
	}
	if c.Broker == brokerRedis {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			return invalid("redis-url", "%v", err)
		}
	}
	if c.Broker == brokerPostgres {
		if _, err := postgres.ParseURL(c.PostgresURL); err != nil {
			return invalid("postgres-url", "%v", err)
		}
		if err := postgres.ValidateSchema(c.PostgresSchema); err != nil {
			return invalid("postgres-schema", "%v", err)
		}
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

// validAddr checks a listen address: [host]:port with a port from 0 to
// 65535 (or a service name).
func validAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (such as :8080 or 127.0.0.1:8080)", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q has no valid port: want 0 to 65535", addr)
	}
	return nil
}

// validInstanceID checks an instance name: 1 to 128 printable ASCII
// characters without spaces.
func validInstanceID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("must be 1 to 128 characters, got %d", len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return fmt.Errorf("may contain only printable ASCII characters without spaces, found %q", id[i])
		}
	}
	return nil
}

func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "taskqueue"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// flagError rewrites the flag package's errors, which name flags with one
// dash, to name them as --help shows them.
func flagError(err error) error {
	msg := err.Error()
	for _, f := range []struct{ from, to string }{
		{"flag provided but not defined: -", "unknown flag --"},
		{"flag needs an argument: -", "a value is needed for --"},
		{" for flag -", " for --"},
		{"bad flag syntax: ", "bad flag syntax: "},
	} {
		if before, after, ok := strings.Cut(msg, f.from); ok {
			return errors.New(before + f.to + after)
		}
	}
	return err
}

// envName maps a flag name to its environment variable.
func envName(flag string) string {
	switch flag {
	case "handler":
		return envPrefix + "HANDLERS"
	case "accept-type":
		return envPrefix + "ACCEPT_TYPES"
	case "type-limit":
		return envPrefix + "TYPE_LIMITS"
	case "webhook-secret":
		return envPrefix + "WEBHOOK_SECRETS"
	}
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: taskqueue [flags]\n       taskqueue healthcheck [flags]   (GET /healthz on --addr: exit 0 if alive, else 1)\n       taskqueue keygen --name NAME --roles ROLES   (print a new API key and its --api-keys-file line)\n       taskqueue migrate [--postgres-url URL] [--postgres-schema NAME]   (apply the Postgres schema migrations and exit)\n\nA task queue with a REST API. Every flag can also be set by the environment\nvariable shown; a flag wins over its variable.\n\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			fmt.Fprintf(w, "  --version\n    \t%s\n", f.Usage)
			return
		}
		fmt.Fprintf(w, "  --%s (env %s)\n    \t%s", f.Name, envName(f.Name), f.Usage)
		if f.DefValue != "" && f.Name != "instance-id" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
