package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/apikeys"
	"github.com/taskqueue/taskqueue/adapters/handlers"
	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/adapters/memory"
	"github.com/taskqueue/taskqueue/adapters/metrics"
	"github.com/taskqueue/taskqueue/adapters/postgres"
	"github.com/taskqueue/taskqueue/adapters/redis"
	"github.com/taskqueue/taskqueue/adapters/workerpool"
	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/ports"
)

// HTTP server timeouts: long enough for a 1 MiB body on a slow link, short
// enough that idle or stalled clients cannot pile up.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// closeTimeout bounds closing what was opened when start-up fails.
	closeTimeout = 5 * time.Second
	// runtimeHeadroom is what the Go runtime's soft memory limit allows
	// beyond the memory broker's limit and the request bodies in flight.
	runtimeHeadroom = 64 << 20
)

// run starts the service and blocks until the first signal arrives, then
// shuts down in order within --shutdown-timeout. A second signal ends it
// at once with an *exitError of code 128+signal, after a log line saying
// what is abandoned. It returns an *exitError with code 2 for bad
// configuration, errHelp or errVersion after printing them, and other
// errors for failures to start or serve. `taskqueue healthcheck` runs the
// health check instead.
func run(signals <-chan os.Signal, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(context.Background(), args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "keygen" {
		return keygen(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "migrate" {
		return migrate(args[1:], getenv, stdout)
	}
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return configError(err)
	}
	logger, err := logging.New(stdout, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	log := logger.WithField("instance", cfg.InstanceID)
	log.WithField("version", buildVersion()).Info("taskqueue starting")

	// SIGHUP asks for a reload (API keys, TLS certificate). Of the other
	// signals, the first cancels ctx and a second one arrives on hard.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hard := make(chan os.Signal, 1)
	reloads := make(chan struct{}, 1)
	go func() {
		stopping := false
		for sig := range signals {
			switch {
			case sig == syscall.SIGHUP:
				select {
				case reloads <- struct{}{}:
				default: // a reload is already due
				}
			case !stopping:
				stopping = true
				cancel()
			default:
				hard <- sig
				return
			}
		}
	}()

	s, err := start(ctx, cfg, getenv, log)
	if err != nil {
		return err
	}
	var failure error
wait:
	for {
		select {
		case <-reloads:
			s.reload()
		case <-ctx.Done():
			log.Info("shutdown signal received; no new tasks accepted, finishing running attempts")
			break wait
		case err := <-s.serveErr:
			failure = fmt.Errorf("http server: %w", err)
			log.WithError(err).Error("http server stopped unexpectedly; shutting down")
			break wait
		case err := <-s.procDone:
			failure = fmt.Errorf("processor: %w", err)
			log.WithError(err).Error("processor stopped unexpectedly; shutting down")
			break wait
		}
	}
	done := make(chan struct{})
	go func() { s.shutdown(cfg.ShutdownTimeout); close(done) }()
	select {
	case <-done:
		return failure
	case sig := <-hard:
		fields := s.broker.left()
		if s.pool != nil {
			fields["running_attempts"] = s.proc.Running()
			fields["abandoned_handlers"] = s.proc.Abandoned()
		}
		log.WithFields(fields).Error("second signal: exiting now without finishing the shutdown")
		code := 1
		if n, ok := sig.(syscall.Signal); ok {
			code = 128 + int(n)
		}
		return &exitError{code: code, err: fmt.Errorf("second signal (%v): exited without finishing the shutdown", sig)}
	}
}

// configError turns a parseConfig error into what run returns.
func configError(err error) error {
	if errors.Is(err, errHelp) || errors.Is(err, errVersion) {
		return err
	}
	return &exitError{code: 2, err: fmt.Errorf("%w (see --help)", err)}
}

// service is everything run starts, in the order it is stopped.
type service struct {
	log      logrus.FieldLogger
	svc      *application.Service
	proc     *application.Processor
	pool     *workerpool.Pool
	srv      *http.Server
	metrics  *http.Server // --metrics-addr; nil without
	keys     *apikeys.Keyring
	cert     *certificate
	broker   openedBroker
	serveErr chan error
	procDone chan error
	stop     context.CancelFunc // stops taking tasks
}

// start opens the broker, builds the handlers, workers and API, listens
// and starts serving and taking tasks. On any error it closes what it had
// opened before returning.
func start(ctx context.Context, cfg config, getenv func(string) string, log logrus.FieldLogger) (s *service, err error) {
	plan := planShutdown(cfg.ShutdownTimeout)
	taskHandlers := builtinHandlers(log)
	client := handlers.NewHTTPClient(max(cfg.Workers, 1))
	signer, err := handlers.NewSigner(cfg.WebhookSecrets, nil)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("webhook-secret: %w", err)}
	}
	for _, w := range cfg.Webhooks {
		if _, taken := taskHandlers[w.Type]; taken {
			return nil, &exitError{code: 2, err: fmt.Errorf("handler: type %q is built in and cannot be a webhook", w.Type)}
		}
		h, err := handlers.NewWebhook(w.Type, w.URL, client, int(cfg.MaxResultBytes))
		if err != nil {
			return nil, &exitError{code: 2, err: err}
		}
		taskHandlers[w.Type] = h.SignWith(signer)
	}
	// The types this instance runs (it takes their tasks from the broker)
	// and the ones it accepts (it takes their submissions): an API-only
	// instance runs none.
	runs := []string{}
	accepts := slices.Clone(cfg.AcceptTypes)
	for t := range taskHandlers {
		if cfg.Workers > 0 {
			runs = append(runs, t)
		}
		if !slices.Contains(accepts, t) {
			accepts = append(accepts, t)
		}
	}
	sort.Strings(runs)
	sort.Strings(accepts)
	for t := range cfg.TypeLimits {
		if !slices.Contains(accepts, t) {
			log.WithField("type", t).Warn("--type-limit names a type this instance neither runs nor accepts; it is shown by GET /types and applies on the instances that run it")
		}
	}

	var keys *apikeys.Keyring
	var auth httpapi.Authenticator
	if cfg.APIKeysFile != "" {
		if keys, err = apikeys.Open(cfg.APIKeysFile); err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("api-keys-file: %w", err)}
		}
		auth = keys
	}
	var cert *certificate
	if cfg.TLSCert != "" {
		if cert, err = loadCertificate(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	}

	broker, err := openBroker(ctx, cfg, runs, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			defer cancel()
			broker.close(closeCtx)
		}
	}()
	if cfg.Broker == brokerMemory && getenv("GOMEMLIMIT") == "" {
		// Make the garbage collector keep the heap near what is really held,
		// so the process stays within the memory limit plus a fixed margin.
		debug.SetMemoryLimit(cfg.MemoryLimit + 2*inflightBodyBytes(cfg) + runtimeHeadroom)
	}
	var pool *workerpool.Pool
	if cfg.Workers > 0 {
		if pool, err = workerpool.New(cfg.Workers, log); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	}

	m := metrics.New(metrics.Options{Workers: cfg.Workers, Types: accepts, Log: log})
	observed := application.ObserveBroker(broker, m)
	m.ReadStats(observed.Stats)
	svc := application.NewService(observed, application.ServiceConfig{
		Types: accepts, Runs: runs, Limits: cfg.TypeLimits,
		MaxBatch: cfg.MaxBatch, IdempotencyTTL: cfg.IdempotencyTTL, Observer: m,
	}, log)
	var proc *application.Processor
	if pool != nil {
		proc = application.NewProcessor(observed, pool, taskHandlers, application.ProcessorConfig{
			Observer:       m,
			Policy:         cfg.RetryPolicy,
			TaskTimeout:    cfg.TaskTimeout,
			HandlerGrace:   plan.handlerGrace,
			MaxAbandoned:   cfg.Workers,
			MaxResultBytes: int(cfg.MaxResultBytes),
		}, log)
		m.CountRunning(proc.Running)
	}
	api := httpapi.New(svc, httpapi.Options{
		MaxBodyBytes: cfg.MaxBodyBytes, MaxInflightBodyBytes: inflightBodyBytes(cfg),
		Auth: auth, Metrics: m.Handler(), Observe: m.ObserveHTTP,
	}, log)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("listen on %s (--metrics-addr): %w", cfg.MetricsAddr, err)
		}
	}
	s = &service{
		log: log, svc: svc, proc: proc, pool: pool, broker: broker, keys: keys, cert: cert,
		srv: &http.Server{
			Handler:           api,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
		},
		serveErr: make(chan error, 1),
		procDone: make(chan error, 1),
	}
	if cert != nil {
		s.srv.TLSConfig = cert.config()
		go func() { s.serveErr <- s.srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { s.serveErr <- s.srv.Serve(ln) }()
	}
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
			WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes}
		go func() { s.serveErr <- s.metrics.Serve(metricsLn) }()
	}
	procCtx, stopTaking := context.WithCancel(context.Background())
	s.stop = stopTaking
	if proc != nil {
		go func() { s.procDone <- proc.Run(procCtx) }()
	}

	fields := settings(cfg)
	fields["addr"] = ln.Addr().String()
	fields["version"] = buildVersion()
	fields["runs_types"] = runs
	fields["accepts_types"] = accepts
	fields["tls"] = cert != nil
	if metricsLn != nil {
		fields["metrics_addr"] = metricsLn.Addr().String()
	}
	if keys != nil {
		fields["api_keys"] = keys.Len()
	}
	log.WithFields(fields).Info("taskqueue listening")
	if keys == nil {
		log.Warn("the API is open: no --api-keys-file is set, so anyone who can reach " + ln.Addr().String() +
			" can submit tasks (which call your webhooks), read every task's payload and result, and cancel or delete tasks; set --api-keys-file (taskqueue keygen makes keys) or keep this port on a private network")
	}
	if cert == nil {
		log.Debug("serving plain HTTP: put a TLS proxy in front, or set --tls-cert and --tls-key")
	}
	if cfg.Broker == brokerMemory {
		log.Info("tasks are kept in this process's memory: they are lost when it stops; use --broker redis or --broker postgres to keep them")
	}
	if cfg.Workers == 0 {
		msg := "API-only instance (--workers 0): it takes submissions and runs no task; instances with workers that share its broker run them"
		if cfg.Broker == brokerMemory {
			msg = "--workers 0 with --broker memory: tasks are stored but nothing runs them, since no other instance can share this process's memory"
		}
		log.Warn(msg)
	}
	return s, nil
}

// settings lists the effective configuration for the start-up line, with
// secrets redacted (Redis password, webhook credentials and query values).
func settings(cfg config) logrus.Fields {
	webhooks := make([]string, len(cfg.Webhooks))
	for i, w := range cfg.Webhooks {
		webhooks[i] = w.Type + "=" + handlers.RedactURL(w.URL)
	}
	f := logrus.Fields{
		"broker":                cfg.Broker,
		"workers":               cfg.Workers,
		"queue_size":            cfg.QueueSize,
		"max_body_bytes":        cfg.MaxBodyBytes,
		"task_timeout":          cfg.TaskTimeout.String(),
		"retry_initial_backoff": cfg.RetryPolicy.Initial().String(),
		"retry_max_backoff":     cfg.RetryPolicy.Max().String(),
		"retention":             cfg.Retention.String(),
		"max_finished":          cfg.MaxFinished,
		"failed_retention":      cfg.FailedRetention.String(),
		"max_failed":            cfg.MaxFailed,
		"idempotency_ttl":       cfg.IdempotencyTTL.String(),
		"max_batch":             cfg.MaxBatch,
		"max_result_bytes":      cfg.MaxResultBytes,
		"shutdown_timeout":      cfg.ShutdownTimeout.String(),
		"webhooks":              webhooks,
		"webhook_secrets":       len(cfg.WebhookSecrets),
		"api_keys_file":         cfg.APIKeysFile,
		"tls_cert":              cfg.TLSCert,
		"type_limits":           typeLimitsFlag{&cfg.TypeLimits}.String(),
		"key_limit":             keyLimitFlag{&cfg.KeyConcurrency}.String(),
		"priority_aging":        cfg.PriorityAging.String(),
		"log_level":             cfg.LogLevel,
		"log_format":            cfg.LogFormat,
	}
	switch cfg.Broker {
	case brokerMemory:
		f["memory_limit"] = cfg.MemoryLimit
	case brokerRedis:
		f["redis_url"] = redis.Redact(cfg.RedisURL)
		f["redis_prefix"] = cfg.RedisPrefix
		f["lease"] = cfg.Lease.String()
	case brokerPostgres:
		f["postgres_url"] = postgres.Redact(cfg.PostgresURL)
		f["postgres_schema"] = cfg.PostgresSchema
		f["postgres_migrate"] = cfg.PostgresMigrate
		f["postgres_poll_only"] = cfg.PostgresPoll
		f["lease"] = cfg.Lease.String()
	}
	return f
}

// inflightBodyBytes bounds the request bodies read at once: 32 of the
// largest allowed.
func inflightBodyBytes(cfg config) int64 { return 32 * cfg.MaxBodyBytes }

// shutdownPlan splits --shutdown-timeout between its steps so the whole
// shutdown fits inside it: running attempts get the grace, then are
// cancelled and get cancelWait to return and be handed back (a handler
// ignoring its cancellation is abandoned after handlerGrace), HTTP gets
// httpClose to finish its last answers, and the broker the rest.
type shutdownPlan struct {
	grace, cancelWait, handlerGrace, httpClose time.Duration
}

func planShutdown(total time.Duration) shutdownPlan {
	reserve := min(5*time.Second, max(total/5, min(total/2, 2*time.Second)))
	cancelWait := reserve * 3 / 5
	return shutdownPlan{
		grace:        total - reserve,
		cancelWait:   cancelWait,
		handlerGrace: max(10*time.Millisecond, min(application.DefaultHandlerGrace, cancelWait/3)),
		httpClose:    reserve / 5,
	}
}

// shutdown stops the service in order within total: refuse new work but
// keep answering (submissions and /readyz get 503, GET still works), stop
// taking tasks, let running attempts finish and hand back the rest, stop
// HTTP, close the broker.
func (s *service) shutdown(total time.Duration) {
	deadline := time.Now().Add(total)
	plan := planShutdown(total)
	s.svc.BeginShutdown()
	s.stop()
	if s.pool != nil {
		if n := s.pool.Stop(plan.grace, plan.cancelWait); n > 0 {
			s.log.WithField("count", n).Warn("shutdown timeout passed; cancelled running attempts and handed them back")
		}
		s.proc.Abort() // outcomes still being recorded give up: the budget is spent
	}
	httpCtx, cancelHTTP := context.WithTimeout(context.Background(), plan.httpClose)
	defer cancelHTTP()
	for _, srv := range []*http.Server{s.srv, s.metrics} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(httpCtx); err != nil {
			_ = srv.Close()
			s.log.WithError(err).Warn("http server did not close cleanly within its share of the shutdown timeout; closed its connections")
		}
	}
	brokerCtx, cancelBroker := context.WithDeadline(context.Background(), deadline)
	defer cancelBroker()
	s.broker.close(brokerCtx)
}

// openedBroker is the configured broker with what run needs to close it.
type openedBroker struct {
	ports.Broker
	// close closes the broker within ctx and logs what it leaves behind.
	close func(ctx context.Context)
	// left says what exiting now would leave behind.
	left func() logrus.Fields
}

// openBroker builds the configured broker. A Redis or Postgres that cannot
// be reached is an error naming the URL (exit code 1).
func openBroker(ctx context.Context, cfg config, runs []string, log logrus.FieldLogger) (openedBroker, error) {
	if cfg.Broker == brokerPostgres {
		return openPostgres(ctx, cfg, runs, log)
	}
	if cfg.Broker == brokerRedis {
		rb, err := redis.New(ctx, redis.Options{
			URL:             cfg.RedisURL,
			Prefix:          cfg.RedisPrefix,
			Instance:        cfg.InstanceID,
			QueueSize:       cfg.QueueSize,
			Retention:       cfg.Retention,
			MaxFinished:     cfg.MaxFinished,
			FailedRetention: cfg.FailedRetention,
			MaxFailed:       cfg.MaxFailed,
			Lease:           cfg.Lease,
			Policy:          cfg.RetryPolicy,
			Types:           runs,
			Limits:          cfg.TypeLimits,
			KeyConcurrency:  cfg.KeyConcurrency,
			Aging:           cfg.PriorityAging,
			Log:             log,
		})
		if err != nil {
			return openedBroker{}, err
		}
		return sharedOpened(rb, "Redis", func(ctx context.Context) (logrus.Fields, error) {
			c, err := rb.Counts(ctx)
			return logrus.Fields{"pending": c.Pending, "scheduled_or_retrying": c.Waiting, "running": c.Running}, err
		}, log), nil
	}
	mem, err := memory.New(memory.Options{
		QueueSize: cfg.QueueSize, MemoryLimit: cfg.MemoryLimit,
		Retention: cfg.Retention, MaxFinished: cfg.MaxFinished,
		FailedRetention: cfg.FailedRetention, MaxFailed: cfg.MaxFailed,
		Types: runs, Limits: cfg.TypeLimits, KeyConcurrency: cfg.KeyConcurrency, Aging: cfg.PriorityAging,
	})
	if err != nil {
		return openedBroker{}, &exitError{code: 2, err: err}
	}
	return openedBroker{Broker: mem, close: func(context.Context) {
		counts := mem.Close()
		log.WithFields(logrus.Fields{"pending_dropped": counts.Pending, "retrying_dropped": counts.Retrying, "scheduled_dropped": counts.Scheduled}).
			Info("taskqueue stopped; the in-memory broker dropped the tasks it still held")
	}, left: func() logrus.Fields {
		counts := mem.Counts()
		return logrus.Fields{"pending_dropped": counts.Pending, "retrying_dropped": counts.Retrying, "scheduled_dropped": counts.Scheduled, "running_dropped": counts.Running}
	}}, nil
}

// sharedBroker is a broker that instances share (Redis, Postgres): tasks
// stay in it when this instance stops.
type sharedBroker interface {
	ports.Broker
	Close(ctx context.Context) (stillHeld int)
	Held() int
}

// sharedOpened says how to close b, a broker kept in name, logging what
// counts reports it still holds.
func sharedOpened(b sharedBroker, name string, counts func(context.Context) (logrus.Fields, error), log logrus.FieldLogger) openedBroker {
	var closed atomic.Bool
	return openedBroker{Broker: b, close: func(ctx context.Context) {
		if closed.Swap(true) {
			return
		}
		fields, err := counts(ctx)
		b.Close(ctx)
		if err != nil {
			log.WithError(err).Warn("taskqueue stopped; could not count the tasks left in " + name)
			return
		}
		log.WithFields(fields).Info("taskqueue stopped; tasks stay in " + name + " for the other instances or the next start")
	}, left: func() logrus.Fields {
		return logrus.Fields{"held_attempts": b.Held(), "note": "tasks stay in " + name + "; attempts left running are recovered by another instance when their lease runs out, as failed attempts"}
	}}
}

// reload re-reads the API key file and the TLS certificate (SIGHUP). What
// cannot be read is logged and the previous keys or certificate stay;
// requests in flight are not disturbed.
func (s *service) reload() {
	if s.keys == nil && s.cert == nil {
		s.log.Info("SIGHUP: nothing to reload (no --api-keys-file, no --tls-cert)")
	}
	if s.keys != nil {
		if n, err := s.keys.Reload(); err != nil {
			s.log.WithError(err).WithField("api_keys", n).Error("SIGHUP: cannot reload the API keys; the previous keys stay in use")
		} else {
			s.log.WithField("api_keys", n).Info("SIGHUP: API keys reloaded")
		}
	}
	if s.cert != nil {
		if err := s.cert.reload(); err != nil {
			s.log.WithError(err).Error("SIGHUP: cannot reload the TLS certificate; the previous one stays in use")
		} else {
			s.log.Info("SIGHUP: TLS certificate reloaded")
		}
	}
}
