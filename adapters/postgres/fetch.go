package postgres

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// One fetcher per instance claims tasks for every worker waiting in
// Dequeue, in one transaction per batch, so the database sees one claim
// per batch of idle workers rather than one per worker.

type waiter struct{ ch chan fetched }

type fetched struct {
	att ports.Attempt
	err error
}

// Dequeue waits for the fetcher to start the next attempt for it; see
// ports.TaskQueue.
func (b *Broker) Dequeue(ctx context.Context) (ports.Attempt, error) {
	if b.closed.Load() {
		return ports.Attempt{}, domain.ErrShuttingDown
	}
	w := &waiter{ch: make(chan fetched, 1)}
	b.mu.Lock()
	if len(b.ahead) > 0 {
		c := b.ahead[0]
		b.ahead = b.ahead[1:]
		att := b.holdLocked(c.claimedTask)
		b.mu.Unlock()
		return att, nil
	}
	b.waiting = append(b.waiting, w)
	b.mu.Unlock()
	b.kickFetch()
	select {
	case f := <-w.ch:
		return f.att, f.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	for i, o := range b.waiting {
		if o == w {
			b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
			b.mu.Unlock()
			return ports.Attempt{}, ctx.Err()
		}
	}
	b.mu.Unlock()
	// The fetcher took w off the list: its answer is on the way.
	f := <-w.ch
	if f.err == nil {
		b.giveBack([]claimedTask{{task: f.att.Task, ready: f.att.Ready}})
	}
	return ports.Attempt{}, ctx.Err()
}

// kickFetch wakes this instance's fetcher.
func (b *Broker) kickFetch() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// wake wakes this instance's fetcher and, through NOTIFY, the others'.
func (b *Broker) wake() {
	b.kickFetch()
	select {
	case b.notifyKick <- struct{}{}:
	default:
	}
}

// stopCtx returns a context cancelled when the broker closes.
func (b *Broker) stopCtx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-b.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

func (b *Broker) fetchLoop() {
	defer b.loops.Done()
	ctx, cancel := b.stopCtx()
	defer cancel()
	timer := time.NewTimer(b.opts.PollInterval)
	defer timer.Stop()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		case <-timer.C:
		}
		next := b.opts.PollInterval
		if b.expireAhead() > 0 {
			next = aheadFor
		}
		for {
			n, ahead := b.demand()
			if n+ahead == 0 {
				break
			}
			if ahead == 0 && b.Held() > 0 {
				// Workers of running attempts are about to ask too: wait
				// up to gather for them, so one claim serves them all.
				b.gatherWaiters(n)
				n, ahead = b.demand()
			}
			want := min(n+ahead, maxClaim)
			got, retryIn, pending, err := b.claim(ctx, want)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.down(err)
				b.failWaiters(err)
				next = backoff
				backoff = min(2*backoff, 2*time.Second)
				break
			}
			b.up()
			backoff = 50 * time.Millisecond
			if retryIn > 0 {
				next = min(next, retryIn)
			}
			// A backlog: more tasks wait than several claims of this size
			// take. Then the next claim also serves workers whose attempt
			// is being recorded (see demand).
			left := pending - int64(len(got))
			b.backlog.Store(left >= backlogMin && left >= backlogFactor*int64(want))
			if left := b.deliver(got); len(left) > 0 {
				if ahead > 0 {
					b.keepAhead(left)
					next = aheadFor
				} else {
					b.giveBack(left)
				}
			}
			if len(got) < want {
				break
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// Claiming ahead. Under a backlog, a worker that has just finished an
// attempt will ask for the next one as soon as the outcome is recorded;
// the fetcher claims that next task while the outcome is being written,
// so the two overlap instead of following each other. A task claimed
// ahead that no worker takes within aheadFor is put back at its place.
// A backlog is at least backlogMin tasks left pending after a claim, and
// backlogFactor times what it asked for. With no backlog nothing is
// claimed ahead, so a task submitted while a worker finishes is still
// considered for that worker.
const (
	aheadFor      = 20 * time.Millisecond
	backlogFactor = 4
	backlogMin    = 100
)

// aheadTask is a task claimed ahead, waiting for a worker.
type aheadTask struct {
	claimedTask
	at time.Time
}

// demand returns how many workers wait in Dequeue, and, under a backlog,
// how many more are about to (their attempt's outcome is being recorded)
// beyond the tasks already claimed ahead.
func (b *Broker) demand() (waiting, ahead int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	waiting = len(b.waiting)
	if b.backlog.Load() {
		ahead = max(0, int(b.settling.Load())-len(b.ahead))
	}
	return waiting, ahead
}

// keepAhead keeps claimed tasks for the next workers to ask.
func (b *Broker) keepAhead(cs []claimedTask) {
	now := time.Now()
	b.mu.Lock()
	for _, c := range cs {
		b.ahead = append(b.ahead, aheadTask{claimedTask: c, at: now})
	}
	b.mu.Unlock()
}

// expireAhead gives back tasks claimed ahead that no worker took in time,
// and returns how many are still kept.
func (b *Broker) expireAhead() int {
	b.mu.Lock()
	var old []claimedTask
	i := 0
	for ; i < len(b.ahead) && time.Since(b.ahead[i].at) >= aheadFor; i++ {
		old = append(old, b.ahead[i].claimedTask)
	}
	b.ahead = b.ahead[i:]
	kept := len(b.ahead)
	b.mu.Unlock()
	if len(old) > 0 {
		b.giveBack(old)
	}
	return kept
}

// gatherWaiters waits up to gather for more workers to ask than the n
// that already do, returning early once no attempt is running.
func (b *Broker) gatherWaiters(n int) {
	t := time.NewTimer(gather)
	defer t.Stop()
	for b.Held() > 0 {
		select {
		case <-t.C:
			return
		case <-b.stop:
			return
		case <-b.kick:
		}
	}
}

// down logs the first error of an outage.
func (b *Broker) down(err error) {
	if !b.unavailable.Swap(true) {
		b.log.WithError(err).Error("cannot reach Postgres; workers wait and try again")
	}
}

// up logs the end of an outage.
func (b *Broker) up() {
	if b.unavailable.Swap(false) {
		b.log.Info("Postgres answers again")
	}
}

// failWaiters answers every waiting Dequeue with err.
func (b *Broker) failWaiters(err error) {
	b.mu.Lock()
	ws := b.waiting
	b.waiting = nil
	b.mu.Unlock()
	for _, w := range ws {
		w.ch <- fetched{err: err}
	}
}

// claimedTask is a task the fetcher started, with when it became pending.
type claimedTask struct {
	task  *domain.Task
	ready time.Time
}

// deliver hands claimed attempts to waiting workers, oldest waiter first,
// and returns those no worker was left to take.
func (b *Broker) deliver(got []claimedTask) []claimedTask {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := 0
	for ; i < len(got) && len(b.waiting) > 0; i++ {
		w := b.waiting[0]
		b.waiting = b.waiting[1:]
		w.ch <- fetched{att: b.holdLocked(got[i])}
	}
	return got[i:]
}

// holdLocked records c as an attempt a worker runs (its lease is renewed
// and its cancel noticed from now on) and returns it. b.mu is held.
func (b *Broker) holdLocked(c claimedTask) ports.Attempt {
	l := &lease{attempt: c.task.Attempts(), ready: c.ready, cancelled: make(chan struct{})}
	b.held[c.task.ID()] = l
	return ports.Attempt{Task: c.task, Cancelled: l.cancelled, Ready: c.ready}
}

// giveBack undoes attempts that were started but reached no worker: each
// task goes back to pending at its old place, and its attempt count back
// down, as if it had never been taken (fenced: a task changed since is
// left alone).
func (b *Broker) giveBack(cs []claimedTask) {
	ms := make(moves, 0, len(cs))
	for _, c := range cs {
		b.forget(c.task.ID(), c.task.Attempts())
		prev, err := unstart(c.task)
		if err != nil {
			b.log.WithError(err).WithField("task_id", c.task.ID()).Error("cannot undo an attempt no worker took; its lease will run out")
			continue
		}
		ms = append(ms, move{task: prev, oldStatus: domain.StatusRunning, oldAttempt: c.task.Attempts(), pendingSince: c.ready})
	}
	if len(ms) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := b.write(ctx, ms); err != nil {
		b.log.WithError(err).WithField("count", len(ms)).Warn("cannot hand back attempts no worker took; they are recovered when their leases run out")
		return
	}
	b.kickFetch()
}

// unstart returns task as it was before the attempt the fetcher started
// (a Start that never reached a worker is undone, not counted).
func unstart(t *domain.Task) (*domain.Task, error) {
	s := t.Snapshot()
	s.Status = domain.StatusPending
	s.Attempts--
	s.StartedAt = time.Time{}
	return domain.RehydrateTask(s)
}

// candidateSQL finds the types and priorities with pending tasks (a
// skip scan over tasks_ready, one probe per type and priority), and in
// each the $2 keys whose turn comes first and that have a pending task
// (turns_order; a scalar subquery probes each key, so the planner cannot
// turn the check into a scan of the whole type and priority), and locks about $2 of those keys' oldest tasks in all (a
// share of $2 for each key), skipping rows other claims hold. The domain
// then picks among them.
func candidateSQL(s string) string {
	return `WITH RECURSIVE g AS (
  (SELECT type, priority FROM ` + s + `.tasks WHERE status = 1 ORDER BY type, priority LIMIT 1)
  UNION ALL
  SELECT h.* FROM g, LATERAL (
    SELECT type, priority FROM ` + s + `.tasks
    WHERE status = 1 AND (type, priority) > (g.type, g.priority)
    ORDER BY type, priority LIMIT 1) h
), k AS (
  SELECT g.type, g.priority, x.fkey, x.turn, count(*) OVER (PARTITION BY g.type, g.priority) AS nk
  FROM g, LATERAL (
    SELECT x.fkey, x.turn FROM ` + s + `.turns x
    WHERE x.type = g.type AND x.priority = g.priority AND (SELECT true FROM ` + s + `.tasks t
      WHERE t.status = 1 AND t.type = x.type AND t.priority = x.priority AND t.fkey = x.fkey LIMIT 1)
    ORDER BY x.turn LIMIT $2) x
  WHERE ($1::text[] IS NULL OR g.type = ANY($1))
    AND NOT EXISTS (SELECT 1 FROM ` + s + `.paused p WHERE p.type = g.type)
)
SELECT k.turn, t.* FROM k, LATERAL (
  SELECT ` + taskCols + ` FROM ` + s + `.tasks t
  WHERE t.status = 1 AND t.type = k.type AND t.priority = k.priority AND t.fkey = k.fkey
  ORDER BY t.type, t.priority, t.fkey, t.seq LIMIT ceil($2::float8 / least(k.nk, $2))::int8 FOR UPDATE SKIP LOCKED) t`
}

// keyQueue is one key's locked candidates in one type and priority.
type keyQueue struct {
	key   string
	turn  int64
	tasks []record
}

// group is one type and priority's candidates, keys in turn order.
type group struct {
	typ   string
	level int
	keys  []*keyQueue
	multi bool // more than one key: turns are recorded
}

// head returns the key whose turn it is, skipping keys that are empty or
// at their cap.
func (g *group) head(capped map[string]bool) *keyQueue {
	var best *keyQueue
	for _, k := range g.keys {
		if len(k.tasks) == 0 || capped[k.key] {
			continue
		}
		if best == nil || k.turn < best.turn || k.turn == best.turn && k.key < best.key {
			best = k
		}
	}
	return best
}

// claim starts up to n attempts in one transaction: it takes the limited
// types' locks, reads their running counts and token buckets, locks
// candidates, lets the domain pick and start them, and writes the
// attempts, the turns and the buckets. It returns the started tasks and,
// when a rate limit held tasks back, how long until a token comes.
func (b *Broker) claim(ctx context.Context, n int) (_ []claimedTask, retryIn time.Duration, pending int64, err error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, 0, 0, classify(ctx, err)
	}
	defer conn.Release() // in a failed transaction, the pool drops the connection
	defer func() {
		if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			rcancel()
		}
	}()
	now := b.opts.Now()
	running := map[string]int64{}
	buckets := map[string]domain.TokenBucket{}
	var stamp int64
	var cands []record
	var turns []int64
	batch := &pgx.Batch{}
	batch.Queue("BEGIN")
	for _, k := range b.lockKeys {
		batch.Queue("SELECT pg_advisory_xact_lock($1)", k)
	}
	if len(b.limited) > 0 {
		batch.Queue("SELECT type, sum(n)::int8 FROM "+b.s+".counts WHERE status = 2 AND type = ANY($1) GROUP BY type", b.limited).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var typ string
				var c int64
				if err := rows.Scan(&typ, &c); err != nil {
					return err
				}
				running[typ] = c
			}
			return rows.Err()
		})
		batch.Queue("SELECT type, tokens, at FROM "+b.s+".buckets WHERE type = ANY($1) FOR UPDATE", b.limited).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var typ string
				var tokens float64
				var at int64
				if err := rows.Scan(&typ, &tokens, &at); err != nil {
					return err
				}
				buckets[typ] = domain.TokenBucket{Tokens: tokens, At: fromNanos(at)}
			}
			return rows.Err()
		})
	}
	batch.Queue("SELECT nextval('" + b.s + ".seq'), (SELECT coalesce(sum(n), 0)::int8 FROM " + b.s + ".counts WHERE status = 1)").
		QueryRow(func(row pgx.Row) error { return row.Scan(&stamp, &pending) })
	var types []string
	if b.opts.Types != nil {
		types = append([]string{}, b.opts.Types...)
	}
	batch.Queue(candidateSQL(b.s), types, n).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var turn int64
			r, err := scanRecord(rows, &turn)
			if err != nil {
				return err
			}
			cands = append(cands, r)
			turns = append(turns, turn)
		}
		return rows.Err()
	})
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return nil, 0, 0, classify(ctx, err)
	}
	if len(cands) == 0 {
		_, err := conn.Exec(ctx, "COMMIT")
		return nil, 0, 0, classify(ctx, err)
	}
	// Key caps: lock the candidate keys (sorted, after the type locks, so
	// claims never wait for each other in a cycle) and count what they run.
	keyRunning := map[string]int64{}
	if b.opts.KeyConcurrency > 0 {
		if keyRunning, err = b.lockKeysRunning(ctx, conn.Conn(), cands); err != nil {
			return nil, 0, 0, err
		}
	}
	picked, served, used, wait := b.pick(cands, turns, n, stamp, now, running, buckets, keyRunning)
	if len(picked) == 0 {
		_, err := conn.Exec(ctx, "COMMIT")
		return nil, wait, pending, classify(ctx, err)
	}
	out := make([]claimedTask, 0, len(picked))
	ms := make(moves, 0, len(picked))
	leaseUntil := now.Add(b.opts.Lease)
	for _, r := range picked {
		t, err := r.task()
		if err != nil {
			return nil, 0, 0, err
		}
		if err := t.Start(now); err != nil {
			return nil, 0, 0, err
		}
		ms = append(ms, move{task: t, oldStatus: domain.StatusPending, oldAttempt: r.snap.Attempts, pendingSince: r.pendingSince, owner: b.owner, leaseUntil: leaseUntil})
		out = append(out, claimedTask{task: t, ready: r.pendingSince})
	}
	// Locks in one order everywhere (tasks, then turns, then counts), so
	// claims, submissions and settles never wait for each other in a
	// cycle: the claim's rows are locked; its turns go before the
	// statement that writes the counters.
	batch = &pgx.Batch{}
	if len(served) > 0 {
		b.turnsDirty.Store(true)
		var typs, keys []string
		var levels []int16
		var stamps []int64
		for _, s := range served {
			typs, levels, keys, stamps = append(typs, s.typ), append(levels, int16(s.level)), append(keys, s.key), append(stamps, s.turn)
		}
		batch.Queue(`INSERT INTO `+b.s+`.turns (type, priority, fkey, turn)
SELECT * FROM unnest($1::text[], $2::int2[], $3::text[], $4::int8[])
ON CONFLICT (type, priority, fkey) DO UPDATE SET turn = excluded.turn`, typs, levels, keys, stamps)
	}
	q, args := ms.args(b.s)
	moved := 0
	batch.Queue(q, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			moved++
		}
		return rows.Err()
	})
	if len(used) > 0 {
		var typs []string
		var tokens []float64
		var ats []int64
		for typ, bk := range used {
			typs, tokens, ats = append(typs, typ), append(tokens, bk.Tokens), append(ats, nanos(bk.At))
		}
		batch.Queue(`INSERT INTO `+b.s+`.buckets (type, tokens, at)
SELECT * FROM unnest($1::text[], $2::float8[], $3::int8[])
ON CONFLICT (type) DO UPDATE SET tokens = excluded.tokens, at = excluded.at`, typs, tokens, ats)
	}
	batch.Queue("COMMIT")
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return nil, 0, 0, classify(ctx, err)
	}
	b.moved.Add(int64(moved))
	if moved != len(ms) {
		// Cannot happen while the rows are locked; say so if it does.
		return nil, 0, 0, errors.New("postgres: a claimed task changed under its row lock")
	}
	return out, wait, pending, nil
}

// served is a key's new turn in one type and priority.
type served struct {
	typ   string
	level int
	key   string
	turn  int64
}

// pick lets the domain choose up to n of the candidates: the next is the
// head of the type and priority that domain.Candidate.Outranks puts first,
// among the types under their concurrency limit that get a rate token,
// and within it the key whose turn it is, unless the key is at its cap.
// It returns the chosen rows, the keys' new turns, the buckets it took
// tokens from, and how long until a rate-limited type gets a token.
func (b *Broker) pick(cands []record, turns []int64, n int, stamp int64, now time.Time,
	running map[string]int64, buckets map[string]domain.TokenBucket, keyRunning map[string]int64,
) (picked []record, servedKeys []served, used map[string]domain.TokenBucket, wait time.Duration) {
	type gk struct {
		typ   string
		level int
	}
	groups := map[gk]*group{}
	var order []*group
	for i, r := range cands {
		id := gk{r.snap.Type, r.snap.Priority}
		g := groups[id]
		if g == nil {
			g = &group{typ: id.typ, level: id.level}
			groups[id] = g
			order = append(order, g)
		}
		var kq *keyQueue
		for _, k := range g.keys {
			if k.key == r.snap.Key {
				kq = k
			}
		}
		if kq == nil {
			kq = &keyQueue{key: r.snap.Key, turn: turns[i]}
			g.keys = append(g.keys, kq)
		}
		kq.tasks = append(kq.tasks, r)
	}
	for _, g := range order {
		g.multi = len(g.keys) > 1
		for _, k := range g.keys {
			sort.Slice(k.tasks, func(i, j int) bool { return k.tasks[i].seq < k.tasks[j].seq })
			if k.key != "" {
				g.multi = true
			}
		}
	}
	blocked := map[string]bool{} // types that may start no more now
	capped := map[string]bool{}  // keys at their cap
	used = map[string]domain.TokenBucket{}
	last := map[served]int64{}
	lastOrder := []served{}
	for i := 0; len(picked) < n; {
		var best *group
		var bestK *keyQueue
		var bestC domain.Candidate
		for _, g := range order {
			if blocked[g.typ] {
				continue
			}
			k := g.head(capped)
			if k == nil {
				continue
			}
			h := k.tasks[0]
			c := domain.Candidate{Level: g.level, Seq: uint64(h.seq), PendingSince: h.pendingSince}
			if best == nil || c.Outranks(bestC, now, b.opts.Aging) {
				best, bestK, bestC = g, k, c
			}
		}
		if best == nil {
			break
		}
		l := b.opts.Limits[best.typ]
		if l.Concurrency > 0 && running[best.typ] >= int64(l.Concurrency) {
			blocked[best.typ] = true
			continue
		}
		if l.Rate > 0 {
			nb, took, w := l.Take(buckets[best.typ], now)
			if !took {
				blocked[best.typ] = true
				if wait == 0 || w < wait {
					wait = w
				}
				continue
			}
			buckets[best.typ], used[best.typ] = nb, nb
		}
		if b.opts.KeyConcurrency > 0 && bestK.key != "" && keyRunning[bestK.key] >= int64(b.opts.KeyConcurrency) {
			capped[bestK.key] = true
			continue
		}
		r := bestK.tasks[0]
		bestK.tasks = bestK.tasks[1:]
		picked = append(picked, r)
		running[best.typ]++
		if bestK.key != "" {
			keyRunning[bestK.key]++
		}
		bestK.turn = stamp*1024 + int64(i) + 1
		i++
		if best.multi {
			s := served{typ: best.typ, level: best.level, key: bestK.key}
			if _, ok := last[s]; !ok {
				lastOrder = append(lastOrder, s)
			}
			last[s] = bestK.turn
		}
	}
	for _, s := range lastOrder {
		s.turn = last[s]
		servedKeys = append(servedKeys, s)
	}
	sort.Slice(servedKeys, func(i, j int) bool {
		a, c := servedKeys[i], servedKeys[j]
		if a.typ != c.typ {
			return a.typ < c.typ
		}
		if a.level != c.level {
			return a.level < c.level
		}
		return a.key < c.key
	})
	return picked, servedKeys, used, wait
}

// lockKeysRunning takes the advisory locks of the candidates' keys, in
// order, and returns how many attempts each key runs.
func (b *Broker) lockKeysRunning(ctx context.Context, conn *pgx.Conn, cands []record) (map[string]int64, error) {
	seen := map[string]bool{}
	var keys []string
	for _, r := range cands {
		if r.snap.Key != "" && !seen[r.snap.Key] {
			seen[r.snap.Key] = true
			keys = append(keys, r.snap.Key)
		}
	}
	out := map[string]int64{}
	if len(keys) == 0 {
		return out, nil
	}
	sort.Strings(keys)
	lk := make([]int64, len(keys))
	for i, k := range keys {
		lk[i] = lockKey(b.opts.Schema, "key\x00"+k)
	}
	batch := &pgx.Batch{}
	for _, k := range lk {
		batch.Queue("SELECT pg_advisory_xact_lock($1)", k)
	}
	batch.Queue("SELECT fkey, count(*) FROM "+b.s+".tasks WHERE status = 2 AND fkey = ANY($1) GROUP BY fkey", keys).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var k string
			var c int64
			if err := rows.Scan(&k, &c); err != nil {
				return err
			}
			out[k] = c
		}
		return rows.Err()
	})
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return nil, classify(ctx, err)
	}
	return out, nil
}

// heldIDs returns the ids and attempts this instance runs.
func (b *Broker) heldIDs() ([]uuid.UUID, []int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(b.held))
	atts := make([]int32, 0, len(b.held))
	for id, h := range b.held {
		ids = append(ids, id)
		atts = append(atts, int32(h.attempt))
	}
	return ids, atts
}
