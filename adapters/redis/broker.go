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
	"strconv"
	"strings"
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
	// Instance names this instance in lease tokens, in the state of the
	// attempts it runs and in logs. It should be unique among the
	// instances sharing the queue (host:pid, say).
	Instance string
	// QueueSize bounds the tasks waiting to run (scheduled, pending and
	// retrying) of the whole shared queue.
	QueueSize int
	// Retention is how long succeeded tasks can still be read (Redis TTL),
	// and MaxFinished caps how many are kept (0: no cap).
	Retention   time.Duration
	MaxFinished int
	// FailedRetention and MaxFailed are the same for dead letters (failed
	// and cancelled tasks). FailedRetention defaults to Retention.
	FailedRetention time.Duration
	MaxFailed       int
	// Lease is how long an attempt may go without its instance renewing
	// it before another instance recovers the task. At least one second.
	Lease time.Duration
	// Policy decides the backoff of a task recovered from a dead instance.
	Policy domain.RetryPolicy
	// MaintainInterval is how often due retries are promoted and expired
	// leases looked for. Defaults to one second.
	MaintainInterval time.Duration
	// SweepInterval is how often one of the instances sharing the queue
	// looks through the task records for tasks that no set holds.
	// Defaults to one minute.
	SweepInterval time.Duration
	// CancelCheckInterval is how often the instance asks whether the tasks
	// of its running attempts were cancelled. Defaults to 500 ms, so a
	// cancel reaches its attempt within a second.
	CancelCheckInterval time.Duration
	// NoFunctions runs the scripts by EVALSHA even on Redis 7 and later,
	// where they are otherwise loaded as one function library (faster:
	// its helpers are not redefined on every call). For proxies and
	// managed services that refuse FUNCTION and FCALL.
	NoFunctions bool
	// Types are the task types whose attempts this instance starts (it
	// has their handlers); nil means every type. Tasks of other types
	// wait for an instance that runs them.
	Types []string
	// Limits bound each type's attempts across every instance sharing the
	// queue (concurrency and rate); every instance should be given the
	// same limits. KeyConcurrency caps the running attempts of any one
	// fairness key (0: none), and Aging makes a pending task count one
	// priority level higher per Aging waited (0: strict order).
	Limits         map[string]domain.TypeLimits
	KeyConcurrency int
	Aging          time.Duration
	Log            logrus.FieldLogger
	// Now and Random default to the wall clock and math/rand/v2.
	Now    func() time.Time
	Random func() float64
}

// Broker implements ports.Broker on Redis.
type Broker struct {
	rdb     *goredis.Client
	blocker *goredis.Client // for the idle fetcher's BLPOP; Close interrupts it
	opts    Options
	keys    keys
	scripts scripts
	log     logrus.FieldLogger
	tokens  string // this process's prefix of lease tokens
	fetchN  atomic.Uint64

	mu   sync.Mutex
	held map[uuid.UUID]lease // attempts this instance runs
	// lost holds the token prefixes of dequeue calls whose reply never
	// came: they may have started attempts nobody runs, which maintenance
	// puts back once Redis answers again.
	lost []string

	waiters     chan *waiter
	calls       chan *call
	callMu      sync.RWMutex
	callsClosed bool
	kick        chan struct{} // asks maintenance to run now
	ctx         context.Context
	cancel      context.CancelFunc
	stop        chan struct{}
	loops       sync.WaitGroup // fetch, renew, maintain, sweep
	callers     sync.WaitGroup // pipeline workers
	closed      atomic.Bool
	// flowArgs are the dequeue script's flow-control arguments (aging,
	// key limit, the types this instance runs and their limits), and
	// wakeKeys the wake lists its idle fetcher waits on.
	flowArgs []any
	wakeKeys []string
	// subSecondBlock says the server takes BLPOP timeouts under a second
	// (Redis 6 and later).
	subSecondBlock bool
	sweeps         atomic.Int64 // sweep passes this instance ran
	renewFailing   atomic.Bool  // the last renewal could not reach Redis
}

// lease is an attempt this instance runs.
type lease struct {
	token     string
	attempt   int
	score     string    // place in the ready set, for a hand-back
	deadline  time.Time // when the lease runs out unless renewed
	cancelled chan struct{}
	ready     time.Time // when the task became pending before this attempt
}

type keys struct {
	tag, pending, running, delayed, finished, dead, seq, wake, counts string
	ptypes, paused, buckets, krun, cwait, tops                        string
	task, schema, sweep, idem                                         string
	readyV2                                                           string // the second layout's ready set
}

func newKeys(prefix string) keys {
	tag := "{" + prefix + "}:"
	return keys{
		tag: tag, pending: tag + "pending", running: tag + "running", delayed: tag + "delayed",
		finished: tag + "finished", dead: tag + "dead", seq: tag + "seq", wake: tag + "wake", counts: tag + "counts",
		ptypes: tag + "ptypes", paused: tag + "paused", buckets: tag + "buckets", krun: tag + "krun", cwait: tag + "cwait", tops: tag + "tops",
		task: tag + "t:", schema: tag + "schema", sweep: tag + "sweep", idem: tag + "idem:", readyV2: tag + "ready",
	}
}

// all returns the keys every script takes, in the order the prelude
// names them.
func (k keys) all() []string {
	return []string{k.pending, k.running, k.delayed, k.finished, k.dead, k.seq, k.wake, k.counts,
		k.ptypes, k.paused, k.buckets, k.krun, k.cwait, k.tops}
}

// wakeOf is the wake list of instances that run type typ.
func (k keys) wakeOf(typ string) string { return k.wake + "|" + typ }

// fifo is the ready FIFO of key's tasks of type typ at priority level.
func (k keys) fifo(typ string, level int, key string) string {
	return k.tag + "q|" + typ + "|" + strconv.Itoa(level) + "|" + key
}

type scripts struct {
	enqueue, dequeue, settle, update, del, renew, check, undo, maintain, stats, repair, convertV2 *op
}

var _ ports.Broker = (*Broker)(nil)

const (
	fetchBatch      = 64
	maxFetches      = 3
	maxLost         = 64
	pipelineBatch   = 128
	pipelineCallers = 4
	opTimeout       = 5 * time.Second
	// schemaVersion names the layout of the keys; see record.go.
	schemaVersion = "3"
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
	if opts.Instance == "" {
		opts.Instance = "taskqueue"
	}
	if opts.FailedRetention == 0 {
		opts.FailedRetention = opts.Retention
	}
	if opts.CancelCheckInterval <= 0 {
		opts.CancelCheckInterval = 500 * time.Millisecond
	}
	// go-redis reports connection-pool trouble through one process-wide
	// logger, to stderr by default. Route it to ours at debug level: the
	// broker reports Redis trouble itself, once per outage.
	setLogger.Do(func() { goredis.SetLogger(redisLogger{opts.Log}) })
	copts, err := ParseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	copts.PoolSize = max(copts.PoolSize, 32)
	// No silent retries inside go-redis: a script whose reply was lost may
	// have run, and running it again would start a second set of attempts
	// (dequeue) or report a stored task as a duplicate (enqueue). The
	// broker retries where that is safe, knowing which call it repeats.
	copts.MaxRetries = -1
	rdb := goredis.NewClient(copts)
	b, err := open(ctx, rdb, copts, opts)
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", Redact(opts.URL), err)
	}
	return b, nil
}

// ParseURL checks a Redis URL and returns the client options it names. Its
// error names the URL with any password hidden.
func ParseURL(rawURL string) (*goredis.Options, error) {
	copts, err := goredis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %w", Redact(rawURL), err)
	}
	return copts, nil
}

// open checks the server, loads the scripts and starts the background
// work on rdb.
func open(ctx context.Context, rdb *goredis.Client, copts *goredis.Options, opts Options) (*Broker, error) {
	pingCtx, cancelPing := context.WithTimeout(ctx, opTimeout)
	defer cancelPing()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		return nil, fmt.Errorf("cannot reach Redis: %w", err)
	}
	major, err := serverMajor(pingCtx, rdb)
	if err != nil {
		return nil, err
	}
	sc, err := loadScripts(pingCtx, rdb, major, opts.NoFunctions)
	if err != nil {
		return nil, err
	}
	k := newKeys(opts.Prefix)
	if err := checkSchema(ctx, rdb, k, sc, opts); err != nil {
		return nil, err
	}
	bopts := *copts
	bopts.PoolSize, bopts.MinIdleConns, bopts.MaxIdleConns = 1, 0, 1
	bctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		rdb:            rdb,
		blocker:        goredis.NewClient(&bopts),
		opts:           opts,
		keys:           k,
		scripts:        sc,
		log:            opts.Log.WithField("broker", "redis"),
		tokens:         fmt.Sprintf("%s/%08x", opts.Instance, rand.Uint32()),
		held:           make(map[uuid.UUID]lease),
		waiters:        make(chan *waiter, 1024),
		calls:          make(chan *call, 1024),
		kick:           make(chan struct{}, 1),
		ctx:            bctx,
		cancel:         cancel,
		stop:           make(chan struct{}),
		subSecondBlock: major >= 6,
	}
	b.flowArgs, b.wakeKeys = flowArgs(opts, k)
	for i := 0; i < pipelineCallers; i++ {
		b.callers.Add(1)
		go b.pipeline()
	}
	b.loops.Add(5)
	go b.fetchLoop()
	go b.renewLoop()
	go b.cancelLoop()
	go b.maintainLoop()
	go b.sweepLoop()
	return b, nil
}

// loadScripts loads the scripts into Redis: as one function library on
// Redis 7 and later (unless noFunctions), as EVALSHA scripts otherwise.
func loadScripts(ctx context.Context, rdb *goredis.Client, major int, noFunctions bool) (scripts, error) {
	ops := make(map[string]*op, len(allScripts))
	if major >= 7 && !noFunctions {
		lib := newLibrary()
		if err := rdb.FunctionLoadReplace(ctx, lib.code).Err(); err != nil {
			return scripts{}, fmt.Errorf("load function library: %w (set NoFunctions to use EVALSHA scripts)", err)
		}
		for _, s := range allScripts {
			ops[s.name] = &op{fn: lib.name + "_" + s.name, lib: lib}
		}
	} else {
		for _, s := range allScripts {
			sc := s.build(major >= 7)
			if err := sc.Load(ctx, rdb).Err(); err != nil {
				return scripts{}, fmt.Errorf("load scripts: %w", err)
			}
			ops[s.name] = &op{script: sc}
		}
	}
	return scripts{
		enqueue: ops["enqueue"], dequeue: ops["dequeue"], settle: ops["settle"], update: ops["update"], del: ops["delete"],
		renew: ops["renew"], check: ops["check"], undo: ops["undo"], maintain: ops["maintain"], stats: ops["stats"],
		repair: ops["repair"], convertV2: ops["convertV2"],
	}, nil
}

// serverMajor returns the server's major version (0 when it does not say):
// Redis 7 takes script flags, Redis 6 blocking timeouts under a second.
func serverMajor(ctx context.Context, rdb *goredis.Client) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, fmt.Errorf("read server version: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			major, _, _ := strings.Cut(v, ".")
			n, _ := strconv.Atoi(major)
			return n, nil
		}
	}
	return 0, nil
}

// checkSchema marks a new queue with this layout's version, converts a
// queue written in an older layout (see migrateV1 and migrateV2), and
// refuses a layout it does not know.
func checkSchema(ctx context.Context, rdb *goredis.Client, k keys, sc scripts, opts Options) error {
	v, err := rdb.Get(ctx, k.schema).Result()
	switch {
	case err == nil && v == schemaVersion:
		return nil
	case err == nil && v == "2":
		return migrateV2(ctx, rdb, k, sc, opts.Instance, opts.Log)
	case err == nil:
		return fmt.Errorf("queue %s uses key layout %q; this version of taskqueue reads layout %s", strings.TrimSuffix(k.schema, ":schema"), v, schemaVersion)
	case !errors.Is(err, goredis.Nil):
		return fmt.Errorf("read queue layout: %w", err)
	}
	used, err := rdb.Exists(ctx, k.seq).Result()
	if err != nil {
		return fmt.Errorf("read queue layout: %w", err)
	}
	if used > 0 {
		if err := migrateV1(ctx, rdb, k, opts.Instance, opts.Log); err != nil {
			return err
		}
		return migrateV2(ctx, rdb, k, sc, opts.Instance, opts.Log)
	}
	return rdb.SetNX(ctx, k.schema, schemaVersion, 0).Err()
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

// classify turns an error from Redis into the domain's words: a Redis
// refusing writes for lack of memory is domain.ErrStorageFull, anything
// else domain.ErrUnavailable. The cause is kept in the message.
func classify(err error) error {
	var rerr goredis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "OOM ") {
		return fmt.Errorf("%w: Redis refuses writes: maxmemory reached (%w)", domain.ErrStorageFull, err)
	}
	return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
}

// replied reports whether err is an answer from Redis (the command ran, or
// was refused), not a lost connection after which it may or may not have
// run.
func replied(err error) bool {
	var rerr goredis.Error
	return errors.As(err, &rerr) && !errors.Is(err, goredis.ErrClosed)
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// Enqueue stores new tasks, all or none, in one script call; see
// ports.TaskQueue.
func (b *Broker) Enqueue(ctx context.Context, tasks ...*domain.Task) error {
	if b.closed.Load() {
		return domain.ErrShuttingDown
	}
	args := make([]any, 0, 2+8*len(tasks))
	args = append(args, b.keys.tag, b.opts.QueueSize)
	for _, task := range tasks {
		st := task.Status()
		if st != domain.StatusPending && st != domain.StatusScheduled {
			return &domain.TransitionError{Action: "enqueue", From: st}
		}
		d, err := encodeData(task)
		if err != nil {
			return err
		}
		s, err := encodeState(task, "")
		if err != nil {
			return err
		}
		args = append(args, task.ID().String(), d, s, st.String(), task.Type(), task.Priority().Level(), ms(task.RunAt()), task.Key())
	}
	res, err := b.run(ctx, b.scripts.enqueue, b.keys.all(), args...)
	if err != nil {
		return err
	}
	switch n, _ := res.(int64); n {
	case 1:
		return nil
	case 0:
		return domain.ErrQueueFull
	default:
		return fmt.Errorf("a task of this batch is already stored: %w", domain.ErrInvalidInput)
	}
}

// Get returns the stored task, as its record says; see ports.TaskReader.
// It is one HMGET, whatever the number of tasks.
func (b *Broker) Get(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	t, _, err := b.read(ctx, id)
	return t, err
}

// read returns the stored task with its raw state, or
// domain.ErrTaskNotFound.
func (b *Broker) read(ctx context.Context, id uuid.UUID) (*domain.Task, string, error) {
	vals, err := b.rdb.HMGet(ctx, b.keys.task+id.String(), "d", "s", "r").Result()
	if err != nil {
		return nil, "", classify(err)
	}
	d, _ := vals[0].(string)
	s, _ := vals[1].(string)
	r, _ := vals[2].(string)
	if d == "" || s == "" {
		return nil, "", domain.ErrTaskNotFound
	}
	t, _, err := decodeRecord(id, d, s, r)
	return t, s, err
}

// Ping checks that Redis answers; see ports.Pinger.
func (b *Broker) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return domain.ErrShuttingDown
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return classify(err)
	}
	return nil
}

// Settle stores the outcome of an attempt this instance runs; see
// ports.TaskQueue. While Redis cannot be reached it keeps trying until the
// attempt's lease runs out (renewals move that on whenever Redis answers)
// or ctx ends; then it stops renewing the lease, so another instance
// recovers the task.
func (b *Broker) Settle(ctx context.Context, attempt int, task *domain.Task) error {
	id := task.ID()
	b.mu.Lock()
	h, ok := b.held[id]
	b.mu.Unlock()
	if !ok || h.attempt != attempt {
		return fmt.Errorf("settle attempt %d of task %s: %w", attempt, id, domain.ErrStaleAttempt)
	}
	defer b.release(id, h.token)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := b.settle(ctx, task, h, "", true)
		transient := errors.Is(err, domain.ErrUnavailable) || errors.Is(err, domain.ErrStorageFull) || ctx.Err() != nil
		if err == nil || !transient {
			return err
		}
		b.mu.Lock()
		h, ok = b.held[id]
		b.mu.Unlock()
		switch {
		case !ok:
			return fmt.Errorf("settle attempt %d of task %s: %w", attempt, id, domain.ErrStaleAttempt)
		case ctx.Err() != nil:
			return fmt.Errorf("settle attempt %d of task %s: gave up before Redis answered (%w); its lease runs out at %s", attempt, id, ctx.Err(), h.deadline.Format(time.RFC3339))
		case !b.opts.Now().Before(h.deadline):
			return fmt.Errorf("settle attempt %d of task %s: its lease ran out before Redis answered: %w", attempt, id, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// settle runs the settle script for task's attempt under lease h. expiredBy,
// when set, also requires the lease to have run out by then. owner says
// the attempt's own instance writes (and keeps the token in the state).
func (b *Broker) settle(ctx context.Context, task *domain.Task, h lease, expiredBy string, owner bool) error {
	st := task.Status()
	var at string
	switch {
	case st == domain.StatusRetrying:
		at = ms(task.NextAttemptAt())
	case st == domain.StatusPending:
		at = h.score
	case st.Finished():
		at = ms(task.FinishedAt())
	default:
		return &domain.TransitionError{Action: "settle", From: st}
	}
	keep := ""
	if owner {
		keep = h.token
	}
	s, err := encodeState(task, keep)
	if err != nil {
		return err
	}
	retention, limit := b.retention(st)
	res, err := b.run(ctx, b.scripts.settle, b.keys.all(),
		b.keys.tag, task.ID().String(), h.token, s, st.String(), at, retention, limit, expiredBy, string(task.Result().Data))
	if err != nil {
		return err
	}
	switch n, _ := res.(int64); {
	case n == 1, n == 2 && owner:
		return nil
	default:
		return fmt.Errorf("settle attempt %d of task %s: %w", h.attempt, task.ID(), domain.ErrStaleAttempt)
	}
}

// retention returns how long a task of status st is kept once finished
// (ms) and the cap of its kind.
func (b *Broker) retention(st domain.Status) (keepMs int64, limit int) {
	if st.DeadLetter() {
		return b.opts.FailedRetention.Milliseconds(), b.opts.MaxFailed
	}
	return b.opts.Retention.Milliseconds(), b.opts.MaxFinished
}

// release forgets the attempt with the given token: its lease is no longer
// renewed.
func (b *Broker) release(id uuid.UUID, token string) {
	b.mu.Lock()
	if h, ok := b.held[id]; ok && h.token == token {
		delete(b.held, id)
	}
	b.mu.Unlock()
}

// Counts says how many tasks of the whole shared queue each set holds.
type Counts struct {
	Pending, Running, Waiting int64 // Waiting: scheduled and retrying
	// Finished counts the finished tasks still kept.
	Finished int64
}

// Counts returns the sizes of the queue's sets, or domain.ErrUnavailable.
func (b *Broker) Counts(ctx context.Context) (Counts, error) {
	pipe := b.rdb.Pipeline()
	pending := pipe.Get(ctx, b.keys.pending)
	running := pipe.ZCard(ctx, b.keys.running)
	delayed := pipe.ZCard(ctx, b.keys.delayed)
	finished := pipe.ZCard(ctx, b.keys.finished)
	dead := pipe.ZCard(ctx, b.keys.dead)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return Counts{}, classify(err)
	}
	n, _ := pending.Int64()
	return Counts{Pending: n, Running: running.Val(), Waiting: delayed.Val(), Finished: finished.Val() + dead.Val()}, nil
}

// Held returns how many attempts this instance runs, as far as the broker
// knows (taken and not yet settled).
func (b *Broker) Held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.held)
}

// Close stops taking work and the background loops, hands back tasks that
// were fetched but never given to a worker, and closes the connections,
// waiting for that no longer than ctx allows. Tasks stay in Redis.
// Attempts still held (their outcome was not recorded) are left to lease
// expiry. It returns how many attempts were still held. Calling it again
// does nothing.
func (b *Broker) Close(ctx context.Context) (stillHeld int) {
	if b.closed.Swap(true) {
		return 0
	}
	close(b.stop)
	_ = b.blocker.Close() // interrupts an idle fetcher's BLPOP
	loopsDone := make(chan struct{})
	go func() { b.loops.Wait(); close(loopsDone) }()
	select {
	case <-loopsDone:
	case <-ctx.Done():
		b.log.Warn("background work did not stop within the shutdown budget; closing the connection under it")
	}
	if err := b.reclaimLost(ctx); err != nil {
		b.log.WithError(err).Warn("cannot put back tasks started while a reply was lost; their leases will expire and other instances recover them")
	}
	stillHeld = b.Held()
	if stillHeld > 0 {
		b.log.WithField("count", stillHeld).Warn("attempts still running at close; other instances will recover them when their leases expire")
	}
	b.closeCalls()
	b.cancel()
	_ = b.rdb.Close()
	return stillHeld
}
