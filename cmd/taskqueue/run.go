package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/handlers"
	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/adapters/memory"
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
	httpCloseTimeout  = 5 * time.Second
	// cancelWait is how long attempts get to return once shutdown cancels
	// them, before they are left behind.
	cancelWait = 5 * time.Second
)

// run starts the service and blocks until ctx is cancelled (a signal),
// then shuts down in order. It returns an *exitError with code 2 for bad
// configuration, errHelp after printing usage, and other errors for
// failures to start or serve.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return err
	}
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("%w (see --help)", err)}
	}
	log, err := logging.New(stdout, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &exitError{code: 2, err: err}
	}

	broker, closeBroker, err := openBroker(ctx, cfg, log)
	if err != nil {
		return err
	}
	pool, err := workerpool.New(cfg.Workers, log)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	taskHandlers := builtinHandlers(log)
	client := handlers.NewHTTPClient(cfg.Workers)
	for _, w := range cfg.Webhooks {
		if _, taken := taskHandlers[w.Type]; taken {
			return &exitError{code: 2, err: fmt.Errorf("handler: type %q is built in and cannot be a webhook", w.Type)}
		}
		h, err := handlers.NewWebhook(w.URL, client)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		taskHandlers[w.Type] = h
	}
	types := make([]string, 0, len(taskHandlers))
	for t := range taskHandlers {
		types = append(types, t)
	}
	sort.Strings(types)

	svc := application.NewService(broker, types, nil, nil, log)
	proc := application.NewProcessor(broker, pool, taskHandlers, application.ProcessorConfig{
		Policy:      cfg.RetryPolicy,
		TaskTimeout: cfg.TaskTimeout,
	}, log)
	var draining atomic.Bool
	api := httpapi.New(svc, httpapi.Options{MaxBodyBytes: cfg.MaxBodyBytes, Healthy: func() bool { return !draining.Load() }}, log)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	procCtx, stopTaking := context.WithCancel(context.Background())
	procDone := make(chan error, 1)
	go func() { procDone <- proc.Run(procCtx) }()

	log.WithFields(logrus.Fields{
		"addr":       ln.Addr().String(),
		"workers":    cfg.Workers,
		"queue_size": cfg.QueueSize,
		"broker":     cfg.Broker,
		"types":      types,
	}).Info("taskqueue listening")

	var failure error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failure = fmt.Errorf("http server: %w", err)
		log.WithError(err).Error("http server stopped unexpectedly; shutting down")
	case err := <-procDone:
		failure = fmt.Errorf("processor: %w", err)
		log.WithError(err).Error("processor stopped unexpectedly; shutting down")
	}

	// 1. Refuse new work but keep answering: submissions get 503 and
	// /healthz turns 503 so load balancers move on; GET still works.
	draining.Store(true)
	svc.BeginShutdown()
	if failure == nil {
		log.Info("shutdown signal received; no new tasks accepted, finishing running attempts")
	}
	// 2. Stop taking tasks from the broker.
	stopTaking()
	// 3. Let running attempts finish, up to the shutdown timeout; the rest
	// are cancelled and handed back to the broker.
	if n := pool.Stop(cfg.ShutdownTimeout, cancelWait); n > 0 {
		log.WithField("count", n).Warn("shutdown timeout passed; cancelled running attempts and handed them back")
	}
	// 4. Stop HTTP.
	shutCtx, cancel := context.WithTimeout(context.Background(), httpCloseTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.WithError(err).Warn("http server did not close cleanly")
	}
	// 5. Close the broker.
	closeBroker()
	return failure
}

// openBroker builds the configured broker and returns it with the function
// that closes it and logs what it leaves behind. A Redis that cannot be
// reached is an error naming the URL (exit code 1).
func openBroker(ctx context.Context, cfg config, log logrus.FieldLogger) (ports.Broker, func(), error) {
	if cfg.Broker == brokerRedis {
		rb, err := redis.New(ctx, redis.Options{
			URL:         cfg.RedisURL,
			Prefix:      cfg.RedisPrefix,
			QueueSize:   cfg.QueueSize,
			Retention:   cfg.Retention,
			MaxFinished: cfg.MaxFinished,
			Lease:       cfg.Lease,
			Policy:      cfg.RetryPolicy,
			Log:         log,
		})
		if err != nil {
			return nil, nil, err
		}
		return rb, func() {
			statsCtx, cancel := context.WithTimeout(context.Background(), httpCloseTimeout)
			defer cancel()
			stats, err := rb.Stats(statsCtx)
			rb.Close()
			if err != nil {
				log.WithError(err).Warn("taskqueue stopped; could not count the tasks left in Redis")
				return
			}
			log.WithFields(logrus.Fields{"pending": stats.Pending, "retrying": stats.Retrying, "running": stats.Running}).
				Info("taskqueue stopped; tasks stay in Redis for the other instances or the next start")
		}, nil
	}
	mem, err := memory.New(memory.Options{QueueSize: cfg.QueueSize, Retention: cfg.Retention, MaxFinished: cfg.MaxFinished})
	if err != nil {
		return nil, nil, &exitError{code: 2, err: err}
	}
	return mem, func() {
		stats := mem.Close()
		log.WithFields(logrus.Fields{"pending_dropped": stats.Pending, "retrying_dropped": stats.Retrying}).
			Info("taskqueue stopped; the in-memory broker dropped the tasks it still held")
	}, nil
}
