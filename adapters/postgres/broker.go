// Package postgres is a broker on PostgreSQL: several instances of the
// service share one durable queue with one global order. A task is one
// row; every move is the domain's transition applied in Go and written,
// fenced by the task's status and attempt count, by one statement that
// also keeps the counters. Claims take pending rows with FOR UPDATE SKIP
// LOCKED; wake-ups come by LISTEN/NOTIFY, issued by the application and
// debounced, with a poll as a backstop.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Options configure a Broker.
type Options struct {
	// URL is a postgres:// URL (or a libpq key=value string).
	URL string
	// Schema names the queue: its tables live in this schema, so several
	// queues can share a database. Defaults to "taskqueue".
	Schema string
	// Migrate applies the embedded schema migrations at start (under an
	// advisory lock). When false, New refuses a schema that is not at
	// LatestVersion, for teams that run `taskqueue migrate` themselves.
	Migrate bool
	// Instance names this instance as the owner of the attempts it runs.
	Instance string
	// QueueSize bounds the tasks waiting to run (scheduled, pending and
	// retrying) of the whole shared queue.
	QueueSize int
	// Retention is how long succeeded tasks can still be read, and
	// MaxFinished caps how many are kept (0: no cap). FailedRetention
	// (default Retention) and MaxFailed are the same for failed and
	// cancelled tasks.
	Retention       time.Duration
	MaxFinished     int
	FailedRetention time.Duration
	MaxFailed       int
	// Lease is how long an attempt may go without its instance renewing
	// it before another instance recovers the task. At least one second.
	Lease time.Duration
	// Policy decides the backoff of a task recovered from a dead instance.
	Policy domain.RetryPolicy
	// MaintainInterval is how often due tasks are promoted, expired leases
	// recovered and finished tasks pruned. Defaults to 200 ms.
	MaintainInterval time.Duration
	// CancelCheckInterval is how often the instance asks whether the tasks
	// of its running attempts were cancelled. Defaults to 500 ms.
	CancelCheckInterval time.Duration
	// PollInterval is how often an idle instance looks for work without
	// being woken. Defaults to one second, or 100 ms with PollOnly.
	PollInterval time.Duration
	// PollOnly turns LISTEN off, for transaction poolers (PgBouncer) where
	// a session's LISTEN does not work: instances find work by polling.
	PollOnly bool
	// MaxConns bounds the connection pool (default 16; a pool_max_conns
	// in the URL wins).
	MaxConns int32
	// Types are the task types whose attempts this instance starts; nil
	// means every type. Limits, KeyConcurrency and Aging are as for the
	// other brokers; every instance should be given the same limits.
	Types          []string
	Limits         map[string]domain.TypeLimits
	KeyConcurrency int
	Aging          time.Duration
	Log            logrus.FieldLogger
	// Now and Random default to the wall clock and math/rand/v2.
	Now    func() time.Time
	Random func() float64
}

// Broker implements ports.Broker on PostgreSQL.
type Broker struct {
	pool  *pgxpool.Pool
	opts  Options
	s     string // the quoted schema
	log   logrus.FieldLogger
	owner string // this process's name in the owner column
	// channel is the NOTIFY channel of the queue.
	channel string
	// limited are the types this instance runs that have limits, sorted,
	// with their advisory lock keys.
	limited  []string
	lockKeys []int64

	mu      sync.Mutex
	held    map[uuid.UUID]*lease
	waiting []*waiter
	ahead   []aheadTask // claimed ahead for workers about to ask
	// settling counts Settle calls in progress; backlog says the last
	// claim left many tasks waiting.
	settling atomic.Int64
	backlog  atomic.Bool
	// turnsDirty says claims rewrote turns since the last vacuum of it;
	// moved counts the rows this instance moved since it last vacuumed
	// the tasks table (maintenance only), at lastVacuum.
	turnsDirty atomic.Bool
	moved      atomic.Int64
	lastVacuum time.Time

	settles    chan *settleReq
	enqueues   chan *enqueueReq
	kick       chan struct{} // wakes the fetcher
	notifyKick chan struct{} // asks the notifier to NOTIFY
	stop       chan struct{}
	loops      sync.WaitGroup
	closed     atomic.Bool
	// unavailable is set while the database cannot be reached, so the
	// outage is logged once.
	unavailable atomic.Bool
}

// lease is an attempt this instance runs.
type lease struct {
	attempt   int
	ready     time.Time
	cancelled chan struct{}
	closed    bool
}

var _ ports.Broker = (*Broker)(nil)

const (
	opTimeout  = 5 * time.Second
	maxClaim   = 256
	maxSettle  = 256
	maxEnqueue = 1000
	// vacuumAfter and vacuumEvery: see vacuumIfChurned.
	vacuumAfter = 20000
	vacuumEvery = 5 * time.Second
	// gather is how long a claim or a settle waits for more of the same
	// while other attempts of the instance are running: a bigger batch
	// is one commit for many.
	gather     = 250 * time.Microsecond
	pruneBatch = 500
)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateSchema returns an error unless name is a plain lower-case SQL
// identifier (letters, digits, _; at most 63 bytes).
func ValidateSchema(name string) error {
	if !schemaName.MatchString(name) {
		return fmt.Errorf("schema %q must be 1 to 63 lower-case letters, digits or _, not starting with a digit", name)
	}
	return nil
}

// ParseURL checks a Postgres URL and returns the pool config it names.
// Its error names the URL with any password hidden.
func ParseURL(rawURL string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("postgres URL %q: %s", Redact(rawURL), redactErr(err, rawURL))
	}
	return cfg, nil
}

// Redact returns rawURL with any password replaced, for messages.
func Redact(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	// key=value form: hide password=...
	return dsnPassword.ReplaceAllString(rawURL, "${1}xxxxx")
}

var dsnPassword = regexp.MustCompile(`(password\s*=\s*)('[^']*'|\S+)`)

// redactErr is err's message without the password of rawURL.
func redactErr(err error, rawURL string) string {
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return msg
}

// Open connects to Postgres with the pool New would use, without starting
// a broker: for `taskqueue migrate`. The caller closes the pool.
func Open(ctx context.Context, rawURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	// The queue's statements are the same few, run again and again with
	// other values: plan them once per connection (a generic plan) rather
	// than on every call; the claim's planning cost more than its run.
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	if !strings.Contains(rawURL, "pool_max_conns") {
		if maxConns <= 0 {
			maxConns = 16
		}
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres at %s: %s", Redact(rawURL), redactErr(err, rawURL))
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach postgres at %s: %s", Redact(rawURL), redactErr(err, rawURL))
	}
	return pool, nil
}

// New connects to Postgres, brings the schema up to date (or checks it,
// see Options.Migrate) and starts the broker's background work. It
// returns an error naming the URL (without its password) when Postgres
// cannot be reached.
func New(ctx context.Context, opts Options) (*Broker, error) {
	if opts.Schema == "" {
		opts.Schema = "taskqueue"
	}
	switch {
	case opts.QueueSize < 1:
		return nil, fmt.Errorf("queue size must be at least 1, got %d", opts.QueueSize)
	case opts.Lease < time.Second:
		return nil, fmt.Errorf("lease must be at least 1s, got %s", opts.Lease)
	case opts.Retention < 0 || opts.MaxFinished < 0 || opts.FailedRetention < 0 || opts.MaxFailed < 0:
		return nil, errors.New("retention and caps must not be negative")
	case opts.Log == nil:
		return nil, errors.New("a logger is required")
	}
	if err := ValidateSchema(opts.Schema); err != nil {
		return nil, err
	}
	if opts.MaintainInterval <= 0 {
		opts.MaintainInterval = 200 * time.Millisecond
	}
	if opts.CancelCheckInterval <= 0 {
		opts.CancelCheckInterval = 500 * time.Millisecond
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
		if opts.PollOnly {
			opts.PollInterval = 100 * time.Millisecond
		}
	}
	if opts.FailedRetention == 0 {
		opts.FailedRetention = opts.Retention
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
	pool, err := Open(ctx, opts.URL, opts.MaxConns)
	if err != nil {
		return nil, err
	}
	if opts.Migrate {
		if _, _, err := Migrate(ctx, pool, opts.Schema); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres at %s: migrate schema %s: %w", Redact(opts.URL), opts.Schema, err)
		}
	} else {
		v, err := Version(ctx, pool, opts.Schema)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres at %s: %w", Redact(opts.URL), err)
		}
		if v != LatestVersion() {
			pool.Close()
			return nil, fmt.Errorf("postgres at %s: schema %s is at version %d; this build needs version %d: run `taskqueue migrate` (or start with --postgres-migrate)", Redact(opts.URL), opts.Schema, v, LatestVersion())
		}
	}
	b := &Broker{
		pool:       pool,
		opts:       opts,
		s:          quoteIdent(opts.Schema),
		log:        opts.Log.WithField("broker", "postgres"),
		owner:      fmt.Sprintf("%s/%08x", opts.Instance, rand.Uint32()),
		channel:    "taskqueue_" + opts.Schema,
		held:       map[uuid.UUID]*lease{},
		settles:    make(chan *settleReq),
		enqueues:   make(chan *enqueueReq),
		kick:       make(chan struct{}, 1),
		notifyKick: make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	for typ, l := range opts.Limits {
		if (l.Concurrency > 0 || l.Rate > 0) && b.runs(typ) {
			b.limited = append(b.limited, typ)
		}
	}
	sort.Strings(b.limited)
	for _, typ := range b.limited {
		b.lockKeys = append(b.lockKeys, lockKey(opts.Schema, "type\x00"+typ))
	}
	b.loops.Add(7)
	go b.settleLoop()
	go b.enqueueLoop()
	go b.fetchLoop()
	go b.notifyLoop()
	go b.listenLoop()
	go b.maintainLoop()
	go b.leaseLoop()
	return b, nil
}

// runs reports whether this instance starts attempts of typ.
func (b *Broker) runs(typ string) bool {
	if b.opts.Types == nil {
		return true
	}
	for _, t := range b.opts.Types {
		if t == typ {
			return true
		}
	}
	return false
}

// classify turns an error from Postgres into the domain's words: a
// database out of disk is domain.ErrStorageFull; a lost or refused
// connection, a restart or a timeout is domain.ErrUnavailable. A context
// error of the caller is returned as it is.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return ctx.Err()
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "53100" || pgErr.Code == "54000": // disk full, program limit
			return fmt.Errorf("%w: Postgres refuses writes: %w", domain.ErrStorageFull, err)
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57"), strings.HasPrefix(pgErr.Code, "53"),
			pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "25006":
			// connection, operator intervention (shutdown, terminated
			// backend), resources, serialization and deadlock, read-only
			return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
		}
		return fmt.Errorf("postgres: %w", err)
	}
	return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
}

// opCtx bounds a database call by opTimeout within ctx.
func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// Ping checks that Postgres answers; see ports.Pinger.
func (b *Broker) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return domain.ErrShuttingDown
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if _, err := b.pool.Exec(ctx, "SELECT 1"); err != nil {
		return classify(ctx, err)
	}
	return nil
}

// Enqueue stores new tasks, all or none, in one transaction that holds the
// queue's bound lock while it counts the waiting tasks; see
// ports.TaskQueue.
func (b *Broker) Enqueue(ctx context.Context, tasks ...*domain.Task) error {
	if b.closed.Load() {
		return domain.ErrShuttingDown
	}
	if len(tasks) == 0 {
		return nil
	}
	for _, t := range tasks {
		if st := t.Status(); st != domain.StatusPending && st != domain.StatusScheduled {
			return &domain.TransitionError{Action: "enqueue", From: st}
		}
	}
	req := &enqueueReq{tasks: tasks, done: make(chan error, 1)}
	select {
	case b.enqueues <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return domain.ErrShuttingDown
	}
	// The write goes on even if ctx ends: its outcome is not lost, only
	// not waited for.
	err := <-req.done
	if err == nil {
		b.wake()
	}
	return err
}

// enqueueReq is one Enqueue waiting for the enqueuer to store its tasks.
type enqueueReq struct {
	tasks []*domain.Task
	done  chan error
}

// enqueueLoop stores the Enqueue calls that come in together in one
// transaction: it holds the bound lock once, counts the waiting tasks
// once, takes the calls in order while they fit (each all or nothing),
// inserts them with one statement and commits once. A call alone takes
// the one-round-trip path.
func (b *Broker) enqueueLoop() {
	defer b.loops.Done()
	ctx, cancel := b.stopCtx()
	defer cancel()
	for {
		var reqs []*enqueueReq
		select {
		case <-b.stop:
			return
		case r := <-b.enqueues:
			reqs = append(reqs, r)
		}
		n := len(reqs[0].tasks)
	more:
		for n < maxEnqueue {
			select {
			case r := <-b.enqueues:
				reqs = append(reqs, r)
				n += len(r.tasks)
			default:
				break more
			}
		}
		wctx := context.WithoutCancel(ctx)
		if len(reqs) == 1 {
			reqs[0].done <- b.insert(wctx, reqs[0].tasks)
			continue
		}
		errs, err := b.insertMany(wctx, reqs)
		if err != nil {
			// A duplicate id in one call spoils the statement: store
			// each call on its own so only that one is refused.
			for _, r := range reqs {
				r.done <- b.insert(wctx, r.tasks)
			}
			continue
		}
		for i, r := range reqs {
			r.done <- errs[i]
		}
	}
}

// insertMany stores several calls' tasks in one transaction and returns
// each call's answer (nil, or domain.ErrQueueFull when it did not fit),
// or an error for the whole transaction.
func (b *Broker) insertMany(ctx context.Context, reqs []*enqueueReq) ([]error, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release() // in a failed transaction, the pool drops the connection
	var waiting int64
	batch := &pgx.Batch{}
	batch.Queue("BEGIN")
	batch.Queue("SELECT pg_advisory_xact_lock($1)", b.boundKey())
	batch.Queue("SELECT coalesce(sum(n), 0)::int8 FROM " + b.s + ".counts WHERE status IN (" + statusList(waitingStatuses()) + ")").
		QueryRow(func(row pgx.Row) error { return row.Scan(&waiting) })
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return nil, err
	}
	errs := make([]error, len(reqs))
	var tasks []*domain.Task
	for i, r := range reqs {
		if waiting+int64(len(r.tasks)) > int64(b.opts.QueueSize) {
			errs[i] = domain.ErrQueueFull
			continue
		}
		waiting += int64(len(r.tasks))
		tasks = append(tasks, r.tasks...)
	}
	batch = &pgx.Batch{}
	if len(tasks) > 0 {
		q, args := insertArgs(b.s, tasks, 0) // counted above
		batch.Queue(q, args...)
	}
	batch.Queue("COMMIT")
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return nil, err
	}
	return errs, nil
}

// insert stores one call's tasks, all or none, in one round trip: one
// implicit transaction holds the bound lock from before the count until
// the rows are in.
func (b *Broker) insert(ctx context.Context, tasks []*domain.Task) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	q, args := insertArgs(b.s, tasks, b.opts.QueueSize)
	batch := &pgx.Batch{}
	batch.Queue("SELECT pg_advisory_xact_lock($1)", b.boundKey())
	var stored int64
	batch.Queue(q, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&stored) })
	if err := b.pool.SendBatch(ctx, batch).Close(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return fmt.Errorf("a task of this batch is already stored: %w", domain.ErrInvalidInput)
		}
		return classify(ctx, err)
	}
	if stored == 0 {
		return domain.ErrQueueFull
	}
	return nil
}

// boundKey is the advisory lock every change that adds waiting tasks
// under the bound holds while it counts them.
func (b *Broker) boundKey() int64 { return lockKey(b.opts.Schema, "bound") }

// Get returns the stored task; see ports.TaskReader. A finished task past
// its retention is not found even before pruning deletes it.
func (b *Broker) Get(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	r, err := scanRecord(b.pool.QueryRow(ctx, "SELECT "+taskCols+" FROM "+b.s+".tasks WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, domain.ErrTaskNotFound
	}
	if err != nil {
		return nil, classify(ctx, err)
	}
	if b.expired(r.snap.Status, r.snap.FinishedAt) {
		return nil, domain.ErrTaskNotFound
	}
	return r.task()
}

// expired reports whether a task of status st that finished at finished
// has outlived its retention.
func (b *Broker) expired(st domain.Status, finished time.Time) bool {
	if !st.Finished() {
		return false
	}
	keep := b.opts.Retention
	if st.DeadLetter() {
		keep = b.opts.FailedRetention
	}
	return !finished.Add(keep).After(b.opts.Now())
}

// Settle stores the outcome of an attempt this instance runs; see
// ports.TaskQueue. While Postgres cannot be reached it keeps trying until
// the attempt's lease runs out or ctx ends.
func (b *Broker) Settle(ctx context.Context, attempt int, task *domain.Task) error {
	id := task.ID()
	b.mu.Lock()
	h, ok := b.held[id]
	b.mu.Unlock()
	if !ok || h.attempt != attempt {
		return fmt.Errorf("settle attempt %d of task %s: %w", attempt, id, domain.ErrStaleAttempt)
	}
	st := task.Status()
	if st != domain.StatusPending && st != domain.StatusRetrying && !st.Finished() {
		return &domain.TransitionError{Action: "settle", From: st}
	}
	defer b.forget(id, attempt)
	b.settling.Add(1)
	defer b.settling.Add(-1)
	if b.backlog.Load() {
		b.kickFetch() // claim this worker's next task while this is written
	}
	deadline := b.opts.Now().Add(b.opts.Lease)
	m := move{task: task, oldStatus: domain.StatusRunning, oldAttempt: attempt, pendingSince: h.ready}
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ok, err := b.settleOnce(ctx, m)
		if err == nil {
			if !ok {
				return fmt.Errorf("settle attempt %d of task %s: %w", attempt, id, domain.ErrStaleAttempt)
			}
			if st == domain.StatusPending || b.flowLimited() {
				b.wake()
			} else {
				b.kickFetch()
			}
			return nil
		}
		if !errors.Is(err, domain.ErrUnavailable) && !errors.Is(err, domain.ErrStorageFull) {
			return err
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("settle attempt %d of task %s: gave up before Postgres answered (%w); its lease lets another instance recover it", attempt, id, ctx.Err())
		case !b.opts.Now().Before(deadline):
			return fmt.Errorf("settle attempt %d of task %s: its lease ran out before Postgres answered: %w", attempt, id, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// settleReq is one Settle waiting for the settler to write it.
type settleReq struct {
	m    move
	done chan settleRes
}

type settleRes struct {
	moved bool
	err   error
}

// settleOnce hands m to the settler, which writes the settles that came
// in together as one statement (one commit for many attempts), and
// reports whether m's row moved.
func (b *Broker) settleOnce(ctx context.Context, m move) (bool, error) {
	req := &settleReq{m: m, done: make(chan settleRes, 1)}
	select {
	case b.settles <- req:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-b.stop:
		return false, domain.ErrShuttingDown
	}
	select {
	case r := <-req.done:
		return r.moved, r.err
	case <-ctx.Done():
		// The write may still land; the lease and the fence keep it safe.
		return false, ctx.Err()
	}
}

// settleLoop writes settles in batches: whatever came in while the last
// batch was being written goes in the next, up to maxSettle.
func (b *Broker) settleLoop() {
	defer b.loops.Done()
	ctx, cancel := b.stopCtx()
	defer cancel()
	for {
		var reqs []*settleReq
		select {
		case <-b.stop:
			return
		case r := <-b.settles:
			reqs = append(reqs, r)
		}
		// While other attempts of this instance are running they tend to
		// end together (their workers started together): wait up to
		// gather for them, so one commit records them all.
		deadline := time.NewTimer(gather)
	more:
		for len(reqs) < maxSettle {
			select {
			case r := <-b.settles:
				reqs = append(reqs, r)
				continue
			default:
			}
			if b.Held() <= len(reqs) {
				break
			}
			select {
			case r := <-b.settles:
				reqs = append(reqs, r)
			case <-deadline.C:
				break more
			case <-b.stop:
				break more
			}
		}
		deadline.Stop()
		ms := make(moves, len(reqs))
		for i, r := range reqs {
			ms[i] = r.m
		}
		moved, err := b.write(context.WithoutCancel(ctx), ms)
		in := make(map[uuid.UUID]bool, len(moved))
		for _, id := range moved {
			in[id] = true
		}
		for _, r := range reqs {
			r.done <- settleRes{moved: in[r.m.task.ID()], err: err}
		}
	}
}

// flowLimited reports whether a finished attempt may let another instance
// start one (limits or key caps are in force).
func (b *Broker) flowLimited() bool { return len(b.limited) > 0 || b.opts.KeyConcurrency > 0 }

// write runs ms as one statement and returns the ids that moved.
func (b *Broker) write(ctx context.Context, ms moves) ([]uuid.UUID, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	q, args := ms.args(b.s)
	rows, err := b.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, classify(ctx, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, classify(ctx, err)
	}
	b.moved.Add(int64(len(ids)))
	return ids, nil
}

// forget drops the lease of attempt of id: it is no longer renewed.
func (b *Broker) forget(id uuid.UUID, attempt int) {
	b.mu.Lock()
	if h, ok := b.held[id]; ok && h.attempt == attempt {
		delete(b.held, id)
	}
	b.mu.Unlock()
}

// Held returns how many attempts this instance runs, as far as the broker
// knows (taken and not yet settled).
func (b *Broker) Held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.held)
}

// Close stops taking work and the background loops and closes the pool,
// waiting for the loops no longer than ctx allows. Tasks stay in
// Postgres; attempts still held are left to lease expiry. It returns how
// many attempts were still held. Calling it again does nothing.
func (b *Broker) Close(ctx context.Context) (stillHeld int) {
	if b.closed.Swap(true) {
		return 0
	}
	close(b.stop)
	done := make(chan struct{})
	go func() { b.loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		b.log.Warn("background work did not stop within the shutdown budget; closing the pool under it")
	}
	b.mu.Lock()
	for _, w := range b.waiting {
		w.ch <- fetched{err: domain.ErrShuttingDown}
	}
	b.waiting = nil
	var ahead []claimedTask
	for _, a := range b.ahead {
		ahead = append(ahead, a.claimedTask)
	}
	b.ahead = nil
	stillHeld = len(b.held)
	b.mu.Unlock()
	b.giveBack(ahead)
	if stillHeld > 0 {
		b.log.WithField("count", stillHeld).Warn("attempts still running at close; other instances recover them when their leases run out")
	}
	b.pool.Close()
	return stillHeld
}
