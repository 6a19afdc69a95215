package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":8080" || cfg.Workers != 5 || cfg.QueueSize != 10000 || cfg.MaxBodyBytes != 1<<20 ||
		cfg.RetryPolicy.Initial() != time.Second || cfg.RetryPolicy.Max() != 5*time.Minute ||
		cfg.TaskTimeout != 30*time.Second || cfg.Retention != time.Hour || cfg.MaxFinished != 100000 || cfg.ShutdownTimeout != 25*time.Second ||
		cfg.MemoryLimit != 256<<20 || !strings.Contains(cfg.InstanceID, ":") ||
		cfg.LogLevel != "info" || cfg.LogFormat != "text" || len(cfg.Webhooks) != 0 ||
		cfg.Broker != "memory" || cfg.RedisURL != "redis://127.0.0.1:6379/0" || cfg.RedisPrefix != "taskqueue" || cfg.Lease != 30*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestConfigEnvAndFlagPrecedence(t *testing.T) {
	e := env(map[string]string{
		"TASKQUEUE_WORKERS":               "7",
		"TASKQUEUE_QUEUE_SIZE":            "3",
		"TASKQUEUE_RETRY_INITIAL_BACKOFF": "2s",
		"TASKQUEUE_LOG_FORMAT":            "json",
		"TASKQUEUE_HANDLERS":              "a=http://x/a, b=https://y/b",
	})
	cfg, err := parseConfig([]string{"--workers", "9", "--handler", "c=http://z/c"}, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workers != 9 || cfg.QueueSize != 3 || cfg.RetryPolicy.Initial() != 2*time.Second || cfg.LogFormat != "json" {
		t.Fatalf("got %+v", cfg)
	}
	if len(cfg.Webhooks) != 1 || cfg.Webhooks[0] != (webhookSpec{"c", "http://z/c"}) {
		t.Fatalf("flag must win over TASKQUEUE_HANDLERS: %+v", cfg.Webhooks)
	}
	cfg, _ = parseConfig(nil, e, nil)
	if len(cfg.Webhooks) != 2 || cfg.Webhooks[1] != (webhookSpec{"b", "https://y/b"}) {
		t.Fatalf("from env: %+v", cfg.Webhooks)
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--workers", "-1"}, nil, "workers"},
		{[]string{"--type-limit", "resize"}, nil, "TYPE=concurrency:N"},
		{[]string{"--type-limit", "resize=concurrency:0"}, nil, "concurrency must be"},
		{[]string{"--type-limit", "resize=concurrency:2,concurrency:3"}, nil, "given once"},
		{[]string{"--type-limit", "resize=rate:10"}, nil, "PERIOD of at least 1ms"},
		{[]string{"--type-limit", "resize=rate:10/0s"}, nil, "PERIOD of at least 1ms"},
		{[]string{"--type-limit", "resize=rate:x/1s"}, nil, "rate must be"},
		{[]string{"--type-limit", "resize=speed:3"}, nil, `unknown limit "speed"`},
		{[]string{"--type-limit", "bad type=concurrency:1"}, nil, "type"},
		{[]string{"--type-limit", "a=concurrency:1", "--type-limit", "a=concurrency:2"}, nil, "twice"},
		{nil, map[string]string{"TASKQUEUE_TYPE_LIMITS": "a=concurrency:1;b=nope:1"}, "TASKQUEUE_TYPE_LIMITS"},
		{[]string{"--key-limit", "3"}, nil, "concurrency:N"},
		{[]string{"--key-limit", "concurrency:0"}, nil, "concurrency:N"},
		{[]string{"--priority-aging", "-1s"}, nil, "priority-aging"},
		{[]string{"--priority-aging", "10us"}, nil, "priority-aging"},
		{[]string{"--accept-type", "no spaces"}, nil, "type"},
		{[]string{"--queue-size", "-1"}, nil, "queue-size"},
		{[]string{"--max-body-bytes", "0"}, nil, "max-body-bytes"},
		{[]string{"--task-timeout", "0s"}, nil, "task-timeout"},
		{[]string{"--retention", "-1s"}, nil, "retention"},
		{[]string{"--max-finished", "-1"}, nil, "max-finished"},
		{[]string{"--retry-initial-backoff", "0s"}, nil, "retry-initial-backoff"},
		{[]string{"--retry-initial-backoff", "2m", "--retry-max-backoff", "1m"}, nil, "retry-max-backoff"},
		{[]string{"--log-level", "loud"}, nil, "log-level"},
		{[]string{"--log-format", "xml"}, nil, "log-format"},
		{[]string{"--handler", "noequals"}, nil, "TYPE=URL"},
		{[]string{"--handler", "bad type=http://x"}, nil, "type"},
		{[]string{"--handler", "t=ftp://x"}, nil, "http"},
		{[]string{"--handler", "t=http://x", "--handler", "t=http://y"}, nil, "twice"},
		{[]string{"--handler", "example_task=http://x"}, nil, "built in"},
		{[]string{"--broker", "kafka"}, nil, "broker"},
		{[]string{"--lease", "500ms"}, nil, "lease"},
		{[]string{"--broker", "redis", "--redis-prefix", ""}, nil, "redis-prefix"},
		{nil, map[string]string{"TASKQUEUE_LEASE": "0s"}, "TASKQUEUE_LEASE"},
		{[]string{"--nope"}, nil, "unknown flag --nope"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{nil, map[string]string{"TASKQUEUE_WORKERS": "many"}, "TASKQUEUE_WORKERS"},
		{nil, map[string]string{"TASKQUEUE_TASK_TIMEOUT": "5"}, "TASKQUEUE_TASK_TIMEOUT"},
		{[]string{"--addr", ":99999"}, nil, "addr: \":99999\" has no valid port"},
		{[]string{"--addr", "nohostport"}, nil, "addr:"},
		{[]string{"--broker", "redis", "--redis-url", "notaurl"}, nil, "redis-url: redis URL"},
		{[]string{"--log-level", "trace"}, nil, "log-level"},
		{[]string{"--log-level", "panic"}, nil, "log-level"},
		{[]string{"--log-level", "warning"}, nil, "log-level"},
		{[]string{"--memory-limit", "12"}, nil, "memory-limit: must be at least 1MiB"},
		{[]string{"--memory-limit", "lots"}, nil, "--memory-limit"},
		{[]string{"--memory-limit", "2MiB", "--max-body-bytes", "4194304"}, nil, "memory-limit: must be at least --max-body-bytes"},
		{[]string{"--instance-id", "has space"}, nil, "instance-id"},
		{[]string{"--workers", "many"}, nil, `invalid value "many" for --workers`},
		{[]string{"--workers"}, nil, "a value is needed for --workers"},
	} {
		_, err := parseConfig(tc.args, env(tc.env), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v; want it to mention %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestFlowControlSettings(t *testing.T) {
	cfg, err := parseConfig([]string{"--workers", "0", "--type-limit", "resize=concurrency:10,rate:100/1s", "--type-limit", "mail=rate:5/m",
		"--key-limit", "concurrency:1", "--priority-aging", "30s", "--accept-type", "report", "--accept-type", "pdf"}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workers != 0 || cfg.KeyConcurrency != 1 || cfg.PriorityAging != 30*time.Second || strings.Join(cfg.AcceptTypes, ",") != "report,pdf" {
		t.Fatalf("got %+v", cfg)
	}
	if l := cfg.TypeLimits["resize"]; l.Concurrency != 10 || l.Rate != 100 || l.Period != time.Second {
		t.Fatalf("resize: %+v", l)
	}
	if l := cfg.TypeLimits["mail"]; l.Concurrency != 0 || l.Rate != 5 || l.Period != time.Minute {
		t.Fatalf("mail: %+v", l)
	}
	// The variables: limits separated by ';' or by ',' before a new TYPE=.
	for _, v := range []string{"resize=concurrency:10,rate:100/1s;mail=rate:5/1m", "resize=concurrency:10,rate:100/1s,mail=rate:5/1m"} {
		cfg, err = parseConfig(nil, env(map[string]string{"TASKQUEUE_TYPE_LIMITS": v, "TASKQUEUE_ACCEPT_TYPES": "a, b", "TASKQUEUE_KEY_LIMIT": "concurrency:2"}), nil)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if len(cfg.TypeLimits) != 2 || cfg.TypeLimits["resize"].Rate != 100 || cfg.TypeLimits["mail"].Period != time.Minute ||
			strings.Join(cfg.AcceptTypes, ",") != "a,b" || cfg.KeyConcurrency != 2 {
			t.Fatalf("%s: %+v", v, cfg)
		}
	}
}

func TestSizesTakeUnits(t *testing.T) {
	for in, want := range map[string]int64{"268435456": 256 << 20, "256MiB": 256 << 20, "1GiB": 1 << 30, "4096KiB": 4 << 20, "500MB": 500e6} {
		cfg, err := parseConfig([]string{"--memory-limit", in}, env(nil), nil)
		if err != nil || cfg.MemoryLimit != want {
			t.Errorf("--memory-limit %s = %d, %v; want %d", in, cfg.MemoryLimit, err, want)
		}
	}
}

// A flag error names the flag as --help does, and says "see --help" once.
func TestConfigErrorsNameFlagsOnce(t *testing.T) {
	for _, args := range [][]string{{"--workers", "x"}, {"extra"}, {"--nope"}} {
		_, err := parseConfig(args, env(nil), nil)
		msg := configError(err).Error()
		if strings.Count(msg, "see --help") != 1 || strings.Contains(msg, " -workers") || strings.Contains(msg, " -nope") {
			t.Errorf("%v: %q", args, msg)
		}
	}
}

func TestShutdownPlanFitsTheBudget(t *testing.T) {
	for _, total := range []time.Duration{0, 200 * time.Millisecond, time.Second, 10 * time.Second, 25 * time.Second, time.Hour} {
		p := planShutdown(total)
		if sum := p.grace + p.cancelWait + p.httpClose; sum > total || p.grace < 0 || p.handlerGrace > p.cancelWait && total > 0 {
			t.Errorf("%v: plan %+v does not fit", total, p)
		}
	}
	if p := planShutdown(25 * time.Second); p.grace != 20*time.Second || p.handlerGrace != time.Second {
		t.Errorf("default plan %+v; want 20s for running attempts and the full 1s handler grace", p)
	}
}

func TestHelpListsEverySettingAndExitsZero(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, errHelp) || exitCode(err, &out) != 0 {
		t.Fatalf("help: %v", err)
	}
	for _, name := range []string{"addr", "workers", "queue-size", "max-body-bytes", "retry-initial-backoff", "retry-max-backoff",
		"task-timeout", "retention", "max-finished", "shutdown-timeout", "handler", "log-level", "log-format", "broker", "redis-url", "redis-prefix", "lease", "TASKQUEUE_HANDLERS", "TASKQUEUE_QUEUE_SIZE", "TASKQUEUE_REDIS_URL",
		"memory-limit", "instance-id", "TASKQUEUE_INSTANCE_ID", "--version", "healthcheck",
		"type-limit", "TASKQUEUE_TYPE_LIMITS", "key-limit", "priority-aging", "accept-type", "TASKQUEUE_ACCEPT_TYPES"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("--help does not mention %s", name)
		}
	}
}

func TestExitCodes(t *testing.T) {
	var buf bytes.Buffer
	if exitCode(nil, &buf) != 0 || exitCode(&exitError{code: 2, err: errors.New("x")}, &buf) != 2 || exitCode(errors.New("y"), &buf) != 1 {
		t.Fatal("wrong exit codes")
	}
}

func TestSecuritySettings(t *testing.T) {
	s1, s2 := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"+strings.Repeat("QUJD", 10)
	cfg, err := parseConfig(nil, env(map[string]string{
		"TASKQUEUE_WEBHOOK_SECRETS": s1 + ", " + s2,
		"TASKQUEUE_API_KEYS_FILE":   "/etc/taskqueue/keys",
		"TASKQUEUE_METRICS_ADDR":    "127.0.0.1:9090",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WebhookSecrets) != 2 || cfg.WebhookSecrets[1] != s2 || cfg.APIKeysFile != "/etc/taskqueue/keys" || cfg.MetricsAddr != "127.0.0.1:9090" {
		t.Fatalf("got %+v", cfg)
	}
	if f := settings(cfg); f["webhook_secrets"] != 2 || strings.Contains(fmt.Sprint(f), "MfKQ9") {
		t.Fatalf("settings show %v (secrets must not be shown)", f["webhook_secrets"])
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--webhook-secret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, `--webhook-secret: a webhook secret must start with "whsec_"`},
		{[]string{"--webhook-secret", "whsec_c2hvcnQ="}, "24 to 64 bytes"},
		{[]string{"--tls-cert", "c.pem"}, "tls-key: is needed with --tls-cert"},
		{[]string{"--tls-key", "k.pem"}, "tls-cert: is needed with --tls-key"},
		{[]string{"--metrics-addr", "nowhere"}, "metrics-addr"},
	} {
		_, err := parseConfig(tc.args, env(nil), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestKeygen(t *testing.T) {
	var out bytes.Buffer
	if err := keygen([]string{"--name", "billing", "--roles", "submit,read"}, &out); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "tq_") || !strings.HasPrefix(lines[1], "billing submit,read ") {
		t.Fatalf("keygen printed:\n%s", out.String())
	}
	for _, args := range [][]string{nil, {"--name", "billing"}, {"--name", "bad name", "--roles", "read"}, {"--name", "a", "--roles", "write"}, {"--name", "a", "--roles", "read", "extra"}} {
		err := keygen(args, &bytes.Buffer{})
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("keygen %v: %v, want exit 2", args, err)
		}
	}
}
