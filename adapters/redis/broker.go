// Package redis is a broker on Redis: several instances of the service
// share one durable queue with one global order. Every change that must
// be atomic is one Lua script; running attempts hold leases that their
// instance renews, and any instance recovers the tasks of one that died.
package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Options configure a Broker.
type Options struct {
	// URL is a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379/0.
	URL string
	// Prefix names the queue; every key is {Prefix}:..., one Cluster slot.
	Prefix string
	// QueueSize bounds the pending tasks of the whole shared queue.
	QueueSize int
	// Retention is how long finished tasks can still be read (Redis TTL).
	Retention time.Duration
	// MaxFinished caps the finished tasks kept; 0 means no cap.
	MaxFinished int
	// Lease is how long an attempt may go without its instance renewing
	// it before another instance recovers the task. At least one second.
	Lease time.Duration
	// Policy decides the backoff of a task recovered from a dead instance.
	Policy domain.RetryPolicy
	// MaintainInterval is how often due retries are promoted and expired
	// leases looked for. Defaults to one second.
	MaintainInterval time.Duration
	// SweepInterval is how often the keyspace is scanned for running tasks
	// that have no lease at all. Defaults to one minute.
	SweepInterval time.Duration
	Log           logrus.FieldLogger
	// Now and Random default to the wall clock and math/rand/v2.
	Now    func() time.Time
	Random func() float64
}

// Broker implements ports.Broker on Redis.
type Broker struct {
	rdb    *goredis.Client
	opts   Options
	keys   keys
	log    logrus.FieldLogger
	id     string // this instance, for lease tokens
	fetchN atomic.Uint64

	mu   sync.Mutex
	held map[uuid.UUID]lease // attempts this instance runs

	waiters     chan *waiter
	calls       chan *call
	callMu      sync.RWMutex
	callsClosed bool
	ctx         context.Context // cancelled by Close
	cancel      context.CancelFunc
	stop        chan struct{}
	loops       sync.WaitGroup // fetch, renew, maintain, sweep
	callers     sync.WaitGroup // pipeline workers
	closed      atomic.Bool
}

type lease struct {
	member  string // "id|token" in the running set
	attempt int
	score   string // place in the ready set, for a hand-back
}

type keys struct {
	ready, running, delayed, finished, seq, wake, task string
}

var _ ports.Broker = (*Broker)(nil)

const (
	fetchBatch      = 64
	maxFetches      = 3
	pipelineBatch   = 128
	pipelineCallers = 4
	opTimeout       = 5 * time.Second
)

// New connects to Redis and starts the broker's background work. It
// returns an error naming the URL (without its password) when Redis cannot
// be reached or the options are invalid.
func New(ctx context.Context, opts Options) (*Broker, error) {
	switch {
	case opts.QueueSize < 1:
		return nil, fmt.Errorf("queue size must be at least 1, got %d", opts.QueueSize)
	case opts.Lease < time.Second:
		return nil, fmt.Errorf("lease must be at least 1s, got %s", opts.Lease)
	case opts.Retention < 0 || opts.MaxFinished < 0:
		return nil, errors.New("retention and max finished must not be negative")
	case opts.Prefix == "":
		return nil, errors.New("redis prefix must not be empty")
	case opts.Log == nil:
		return nil, errors.New("a logger is required")
	}
	if opts.MaintainInterval <= 0 {
		opts.MaintainInterval = time.Second
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Random == nil {
		opts.Random = rand.Float64
	}
	// go-redis reports connection-pool trouble through one process-wide
	// logger, to stderr by default. Route it to ours at debug level: the
	// broker reports Redis trouble itself, once per outage.
	setLogger.Do(func() { goredis.SetLogger(redisLogger{opts.Log}) })
	copts, err := goredis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %w", Redact(opts.URL), err)
	}
	copts.PoolSize = max(copts.PoolSize, 32)
	rdb := goredis.NewClient(copts)
	pingCtx, cancelPing := context.WithTimeout(ctx, opTimeout)
	defer cancelPing()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", Redact(opts.URL), err)
	}
	for _, s := range []*goredis.Script{enqueueScript, dequeueScript, settleScript, renewScript, maintainScript, getScript, repairScript} {
		if err := s.Load(pingCtx, rdb).Err(); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("load scripts into Redis at %s: %w", Redact(opts.URL), err)
		}
	}
	host, _ := os.Hostname()
	tag := "{" + opts.Prefix + "}:"
	bctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		rdb:  rdb,
		opts: opts,
		keys: keys{
			ready: tag + "ready", running: tag + "running", delayed: tag + "delayed",
			finished: tag + "finished", seq: tag + "seq", wake: tag + "wake", task: tag + "t:",
		},
		log:     opts.Log.WithField("broker", "redis"),
		id:      fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.Uint32N(1<<16)),
		held:    make(map[uuid.UUID]lease),
		waiters: make(chan *waiter, 1024),
		calls:   make(chan *call, 1024),
		ctx:     bctx,
		cancel:  cancel,
		stop:    make(chan struct{}),
	}
	for i := 0; i < pipelineCallers; i++ {
		b.callers.Add(1)
		go b.pipeline()
	}
	b.loops.Add(4)
	go b.fetchLoop()
	go b.renewLoop()
	go b.maintainLoop()
	go b.sweepLoop()
	return b, nil
}

// Redact returns rawURL with any password replaced, for messages.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

var setLogger sync.Once

type redisLogger struct{ log logrus.FieldLogger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.WithField("component", "go-redis").Debugf(format, v...)
}

func unavailable(err error) error { return fmt.Errorf("%w: %v", domain.ErrUnavailable, err) }

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// Enqueue stores a new pending task; see ports.TaskQueue.
func (b *Broker) Enqueue(ctx context.Context, task *domain.Task) error {
	if b.closed.Load() {
		return domain.ErrShuttingDown
	}
	if task.Status() != domain.StatusPending {
		return &domain.TransitionError{Action: "enqueue", From: task.Status()}
	}
	rec, err := encodeRecord(task)
	if err != nil {
		return err
	}
	id := task.ID().String()
	res, err := b.run(ctx, enqueueScript, []string{b.keys.ready, b.keys.seq, b.keys.wake, b.keys.task + id},
		b.opts.QueueSize, rec, id, task.Priority().Level())
	if err != nil {
		return err
	}
	switch n, _ := res.(int64); n {
	case 1:
		return nil
	case 0:
		return domain.ErrQueueFull
	default:
		return fmt.Errorf("task %s is already stored: %w", id, domain.ErrInvalidInput)
	}
}

// Get returns the stored task, with its running attempt if it has one;
// see ports.TaskReader.
func (b *Broker) Get(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	idStr := id.String()
	res, err := getScript.Run(ctx, b.rdb, []string{b.keys.running, b.keys.task + idStr}, idStr).Slice()
	if errors.Is(err, goredis.Nil) {
		return nil, domain.ErrTaskNotFound
	}
	if err != nil {
		return nil, unavailable(err)
	}
	raw, _ := res[0].(string)
	member, _ := res[1].(string)
	t, err := decodeRecord(id, raw)
	if err != nil || member == "" {
		return t, err
	}
	return runningView(t, member)
}

// Settle stores the outcome of an attempt this instance runs; see
// ports.TaskQueue. While Redis is unreachable it retries until ctx ends.
func (b *Broker) Settle(ctx context.Context, attempt int, task *domain.Task) error {
	b.mu.Lock()
	h, ok := b.held[task.ID()]
	b.mu.Unlock()
	if !ok || h.attempt != attempt {
		return fmt.Errorf("settle attempt %d of task %s: %w", attempt, task.ID(), domain.ErrStaleAttempt)
	}
	err := b.settle(ctx, task, h, "")
	if errors.Is(err, domain.ErrUnavailable) {
		for wait := 100 * time.Millisecond; errors.Is(err, domain.ErrUnavailable); wait = min(2*wait, time.Second) {
			select {
			case <-ctx.Done():
				b.release(task.ID()) // stop renewing: recovery takes it from here
				return err
			case <-time.After(wait):
			}
			err = b.settle(ctx, task, h, "")
		}
	}
	if err == nil || errors.Is(err, domain.ErrStaleAttempt) {
		b.release(task.ID())
	}
	return err
}

// settle runs the settle script for task's attempt under lease h.
// expiredBy, when set, also requires the lease to have run out by then.
func (b *Broker) settle(ctx context.Context, task *domain.Task, h lease, expiredBy string) error {
	var kind, scoreOrDue string
	switch task.Status() {
	case domain.StatusSucceeded, domain.StatusFailed:
		kind = "finished"
	case domain.StatusRetrying:
		kind, scoreOrDue = "retry", ms(task.NextAttemptAt())
	case domain.StatusPending:
		kind, scoreOrDue = "pending", h.score
	default:
		return &domain.TransitionError{Action: "settle", From: task.Status()}
	}
	rec, err := encodeRecord(task)
	if err != nil {
		return err
	}
	res, err := b.run(ctx, settleScript,
		[]string{b.keys.running, b.keys.delayed, b.keys.ready, b.keys.finished, b.keys.wake},
		b.keys.task, task.ID().String(), h.member, rec, kind, scoreOrDue, b.opts.Retention.Milliseconds(),
		b.opts.MaxFinished, expiredBy)
	if err != nil {
		return err
	}
	if n, _ := res.(int64); n != 1 {
		return fmt.Errorf("settle attempt %d of task %s: %w", h.attempt, task.ID(), domain.ErrStaleAttempt)
	}
	return nil
}

func (b *Broker) release(id uuid.UUID) {
	b.mu.Lock()
	delete(b.held, id)
	b.mu.Unlock()
}

// Stats counts the tasks of the whole shared queue by state.
type Stats struct {
	Pending, Running, Retrying int64
	// Finished counts finished tasks tracked for --max-finished (0 when
	// there is no cap); some may already have expired.
	Finished int64
}

// Stats returns the queue's counts, or domain.ErrUnavailable.
func (b *Broker) Stats(ctx context.Context) (Stats, error) {
	pipe := b.rdb.Pipeline()
	ready := pipe.ZCard(ctx, b.keys.ready)
	running := pipe.ZCard(ctx, b.keys.running)
	delayed := pipe.ZCard(ctx, b.keys.delayed)
	finished := pipe.LLen(ctx, b.keys.finished)
	if _, err := pipe.Exec(ctx); err != nil {
		return Stats{}, unavailable(err)
	}
	return Stats{Pending: ready.Val(), Running: running.Val(), Retrying: delayed.Val(), Finished: finished.Val()}, nil
}

// Close stops taking work and the background loops, hands back tasks that
// were fetched but never given to a worker, and closes the connection.
// Tasks stay in Redis. Attempts still held (their handlers did not return)
// are left to lease expiry. It returns how many attempts were still held.
// Calling it again does nothing.
func (b *Broker) Close() (stillHeld int) {
	if b.closed.Swap(true) {
		return 0
	}
	close(b.stop)
	b.loops.Wait()
	b.mu.Lock()
	stillHeld = len(b.held)
	b.mu.Unlock()
	if stillHeld > 0 {
		b.log.WithField("count", stillHeld).Warn("attempts still running at close; other instances will recover them when their leases expire")
	}
	b.closeCalls()
	b.cancel()
	_ = b.rdb.Close()
	return stillHeld
}
