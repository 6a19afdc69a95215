package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/taskqueue/taskqueue/domain"
)

// maintainLoop promotes due tasks, recovers expired leases and prunes
// finished tasks and spent idempotency keys, each in small batches and
// short transactions. Every instance runs it; SKIP LOCKED keeps them off
// each other's rows.
func (b *Broker) maintainLoop() {
	defer b.loops.Done()
	ctx, cancel := b.stopCtx()
	defer cancel()
	tick := time.NewTicker(b.opts.MaintainInterval)
	defer tick.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		due, expired, err := b.anythingDue(ctx)
		if err != nil {
			b.maintenanceError("look for due tasks", err)
			continue
		}
		if due {
			if n, err := b.promote(ctx); err != nil {
				b.maintenanceError("promote due tasks", err)
				continue
			} else if n > 0 {
				b.wake()
			}
		}
		if expired {
			if n, err := b.recoverExpired(ctx); err != nil {
				b.maintenanceError("recover expired leases", err)
				continue
			} else if n > 0 {
				b.wake()
			}
		}
		if now := time.Now(); now.Sub(lastPrune) >= time.Second {
			lastPrune = now
			if err := b.prune(ctx); err != nil {
				b.maintenanceError("prune finished tasks", err)
			}
			if err := b.vacuumIfChurned(ctx); err != nil {
				b.maintenanceError("vacuum the tasks table", err)
			}
		}
	}
}

// anythingDue reports, in one statement outside any transaction, whether
// a scheduled or retrying task is due and whether a lease has run out:
// an idle queue costs one cheap read per tick.
func (b *Broker) anythingDue(ctx context.Context) (due, expired bool, err error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	now := nanos(b.opts.Now())
	err = b.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+b.s+".tasks WHERE status IN (3, 6) AND due_at <= $1), "+
		"EXISTS (SELECT 1 FROM "+b.s+".tasks WHERE status = 2 AND lease_until < $1)", now).Scan(&due, &expired)
	return due, expired, classify(ctx, err)
}

func (b *Broker) maintenanceError(what string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if errors.Is(err, domain.ErrUnavailable) {
		b.down(err)
		return
	}
	b.log.WithError(err).Error("maintenance: cannot " + what)
}

// lockedMove locks up to pruneBatch rows that query selects (FOR UPDATE
// SKIP LOCKED), lets change move each (nil: leave it), and writes the
// moves, in one transaction. It returns how many moved.
func (b *Broker) lockedMove(ctx context.Context, query string, args []any, change func(*domain.Task, record) (*move, error)) (int, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	moved := 0
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (record, error) { return scanRecord(row) })
		if err != nil {
			return err
		}
		var ms moves
		for _, r := range recs {
			t, err := r.task()
			if err != nil {
				b.log.WithError(err).Error("maintenance: skipping a task that cannot be read")
				continue
			}
			m, err := change(t, r)
			if err != nil {
				return err
			}
			if m != nil {
				ms = append(ms, *m)
			}
		}
		if len(ms) == 0 {
			return nil
		}
		q, margs := ms.args(b.s)
		rows, err = tx.Query(ctx, q, margs...)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		moved = len(ids)
		return err
	})
	return moved, classify(ctx, err)
}

// promote makes due scheduled and retrying tasks pending, at the back of
// their priority (the domain's Due and Requeue).
func (b *Broker) promote(ctx context.Context) (int, error) {
	now := b.opts.Now()
	return b.lockedMove(ctx, "SELECT "+taskCols+" FROM "+b.s+".tasks WHERE status IN (3, 6) AND due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
		[]any{nanos(now), pruneBatch}, func(t *domain.Task, r record) (*move, error) {
			old := t.Status()
			var err error
			if old == domain.StatusScheduled {
				err = t.Due(now)
			} else {
				err = t.Requeue(now)
			}
			if err != nil {
				return nil, err
			}
			return &move{task: t, oldStatus: old, oldAttempt: t.Attempts(), newSeq: true, pendingSince: now}, nil
		})
}

// recoverExpired ends the attempts whose instance stopped renewing their
// lease as failed attempts (the domain's Fail: retried while retries are
// left).
func (b *Broker) recoverExpired(ctx context.Context) (int, error) {
	now := b.opts.Now()
	return b.lockedMove(ctx, "SELECT "+taskCols+" FROM "+b.s+".tasks WHERE status = 2 AND lease_until < $1 ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED",
		[]any{nanos(now), pruneBatch}, func(t *domain.Task, r record) (*move, error) {
			attempt := t.Attempts()
			cause := fmt.Sprintf("lease expired: its instance stopped renewing attempt %d (it crashed, hung or lost Postgres)", attempt)
			if err := t.Fail(now, cause, b.opts.Policy, b.opts.Random()); err != nil {
				return nil, err
			}
			b.log.WithField("task_id", t.ID()).WithField("attempt", attempt).WithField("status", t.Status()).Warn("recovered a task whose attempt's lease ran out")
			return &move{task: t, oldStatus: domain.StatusRunning, oldAttempt: attempt}, nil
		})
}

// prune deletes finished tasks past their retention or over their cap,
// oldest first, and spent idempotency keys and idle turns, each in
// batches of pruneBatch so no transaction is long.
func (b *Broker) prune(ctx context.Context) error {
	now := b.opts.Now()
	kinds := []struct {
		statuses string
		keep     time.Duration
		cap      int
	}{
		{"4", b.opts.Retention, b.opts.MaxFinished},
		{"5, 7", b.opts.FailedRetention, b.opts.MaxFailed},
	}
	for _, k := range kinds {
		if err := b.pruneWhere(ctx, "status IN ("+k.statuses+") AND finished_at <= $1", nanos(now.Add(-k.keep))); err != nil {
			return err
		}
		if k.cap > 0 {
			// The cap'th newest finished task's time: anything older goes.
			var cut *int64
			err := b.pool.QueryRow(ctx, "SELECT finished_at FROM "+b.s+".tasks WHERE status IN ("+k.statuses+") ORDER BY finished_at DESC OFFSET $1 LIMIT 1", k.cap).Scan(&cut)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return classify(ctx, err)
			}
			if cut != nil {
				if err := b.pruneWhere(ctx, "status IN ("+k.statuses+") AND finished_at <= $1", *cut); err != nil {
					return err
				}
			}
		}
	}
	for {
		tag, err := b.pool.Exec(ctx, "DELETE FROM "+b.s+".idempotency WHERE key IN (SELECT key FROM "+b.s+".idempotency WHERE expires_at <= $1 LIMIT $2)", nanos(now), pruneBatch)
		if err != nil {
			return classify(ctx, err)
		}
		if tag.RowsAffected() < pruneBatch {
			break
		}
	}
	if err := b.pruneTurns(ctx); err != nil {
		return err
	}
	// The turns table is small and every claim of keyed tasks rewrites
	// some of its rows: its index fills with dead entries that each
	// claim would step over, long before autovacuum's next round (a
	// minute apart by default). Vacuuming it is cheap; do it here, when
	// this instance's claims rewrote turns since the last time.
	if !b.turnsDirty.Swap(false) {
		return nil
	}
	_, err := b.pool.Exec(ctx, "VACUUM (SKIP_LOCKED) "+b.s+".turns")
	return classify(ctx, err)
}

// pruneTurns deletes the turns of keys with no pending task, in batches:
// it locks them first and looks again in a second statement (a fresh
// snapshot), so a task that became pending meanwhile (its statement
// locks its key's row) keeps its key's row.
func (b *Broker) pruneTurns(ctx context.Context) error {
	for {
		var n int64
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT type, priority, fkey FROM `+b.s+`.turns x WHERE NOT EXISTS (
  SELECT 1 FROM `+b.s+`.tasks t WHERE t.status = 1 AND t.type = x.type AND t.priority = x.priority AND t.fkey = x.fkey)
ORDER BY type, priority, fkey LIMIT $1 FOR UPDATE SKIP LOCKED`, pruneBatch)
			if err != nil {
				return err
			}
			var typs, keys []string
			var levels []int16
			for rows.Next() {
				var typ, key string
				var level int16
				if err := rows.Scan(&typ, &level, &key); err != nil {
					return err
				}
				typs, levels, keys = append(typs, typ), append(levels, level), append(keys, key)
			}
			if err := rows.Err(); err != nil || len(typs) == 0 {
				return err
			}
			_, err = tx.Exec(ctx, `DELETE FROM `+b.s+`.turns x USING unnest($1::text[], $2::int2[], $3::text[]) AS d(type, priority, fkey)
WHERE x.type = d.type AND x.priority = d.priority AND x.fkey = d.fkey AND NOT EXISTS (
  SELECT 1 FROM `+b.s+`.tasks t WHERE t.status = 1 AND t.type = x.type AND t.priority = x.priority AND t.fkey = x.fkey)`, typs, levels, keys)
			n = int64(len(typs))
			return err
		})
		if err != nil {
			return classify(ctx, err)
		}
		if n < pruneBatch {
			return nil
		}
	}
}

// vacuumIfChurned vacuums the tasks table once this instance has moved
// vacuumAfter rows since the last time (at most every vacuumEvery, and
// one instance at a time): every claim passes over the index entries
// of tasks claimed before it until a vacuum removes them, and
// autovacuum looks at a table at most once a minute by default, while a
// busy queue turns over tens of thousands of rows in that time.
func (b *Broker) vacuumIfChurned(ctx context.Context) error {
	if b.moved.Load() < vacuumAfter || time.Since(b.lastVacuum) < vacuumEvery {
		return nil
	}
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return classify(ctx, err)
	}
	defer conn.Release()
	key := lockKey(b.opts.Schema, "vacuum")
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil || !got {
		return classify(ctx, err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key) }()
	b.moved.Store(0)
	b.lastVacuum = time.Now()
	_, err = conn.Exec(ctx, "VACUUM (SKIP_LOCKED) "+b.s+".tasks")
	return classify(ctx, err)
}

// pruneWhere deletes finished tasks matching cond (with $1), in batches,
// keeping the counters.
func (b *Broker) pruneWhere(ctx context.Context, cond string, arg any) error {
	for {
		pctx, cancel := opCtx(ctx)
		var n int64
		err := b.pool.QueryRow(pctx, `WITH d AS (
  DELETE FROM `+b.s+`.tasks WHERE id IN (SELECT id FROM `+b.s+`.tasks WHERE `+cond+` ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
  RETURNING type, status
), c AS (
  INSERT INTO `+b.s+`.counts (type, status, stripe, n)
  SELECT type, status, $3, -count(*) FROM d GROUP BY type, status ORDER BY type, status
  ON CONFLICT (type, status, stripe) DO UPDATE SET n = `+b.s+`.counts.n + excluded.n
)
SELECT count(*) FROM d`, arg, pruneBatch, stripe()).Scan(&n)
		cancel()
		if err != nil {
			return classify(ctx, err)
		}
		if n < pruneBatch {
			return nil
		}
	}
}

// leaseLoop renews the leases of the attempts this instance runs (every
// third of the lease) and tells attempts whose task was cancelled or
// taken from them (every CancelCheckInterval).
func (b *Broker) leaseLoop() {
	defer b.loops.Done()
	ctx, cancel := b.stopCtx()
	defer cancel()
	tick := time.NewTicker(b.opts.CancelCheckInterval)
	defer tick.Stop()
	lastRenew := time.Now()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		ids, atts := b.heldIDs()
		if len(ids) == 0 {
			continue
		}
		renew := time.Since(lastRenew) >= b.opts.Lease/3
		if err := b.checkHeld(ctx, ids, atts, renew); err != nil {
			b.maintenanceError("renew leases", err)
			continue
		}
		if renew {
			lastRenew = time.Now()
		}
	}
}

// checkHeld finds which held attempts are no longer their task's running
// attempt (cancelled, recovered or deleted) and tells them; with renew,
// it also moves the others' leases on.
func (b *Broker) checkHeld(ctx context.Context, ids []uuid.UUID, atts []int32, renew bool) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	var q string
	var args []any
	if renew {
		q = `WITH h AS (SELECT * FROM unnest($1::uuid[], $2::int4[]) AS h(id, attempt)),
r AS (UPDATE ` + b.s + `.tasks t SET lease_until = $3 FROM h WHERE t.id = h.id AND t.status = 2 AND t.attempts = h.attempt RETURNING t.id)
SELECT h.id FROM h WHERE h.id NOT IN (SELECT id FROM r)`
		args = []any{ids, atts, nanos(b.opts.Now().Add(b.opts.Lease))}
	} else {
		q = `SELECT h.id FROM unnest($1::uuid[], $2::int4[]) AS h(id, attempt)
WHERE NOT EXISTS (SELECT 1 FROM ` + b.s + `.tasks t WHERE t.id = h.id AND t.status = 2 AND t.attempts = h.attempt)`
		args = []any{ids, atts}
	}
	rows, err := b.pool.Query(ctx, q, args...)
	if err != nil {
		return classify(ctx, err)
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return classify(ctx, err)
	}
	b.up()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range gone {
		if h, ok := b.held[id]; ok && !h.closed {
			h.closed = true
			close(h.cancelled)
			delete(b.held, id)
		}
	}
	return nil
}

// notifyLoop sends one NOTIFY per request, at most one per 5 ms: a burst
// of submissions wakes the other instances once.
func (b *Broker) notifyLoop() {
	defer b.loops.Done()
	ctx, cancel := b.stopCtx()
	defer cancel()
	for {
		select {
		case <-b.stop:
			return
		case <-b.notifyKick:
		}
		nctx, ncancel := opCtx(ctx)
		_, err := b.pool.Exec(nctx, "SELECT pg_notify($1, '')", b.channel)
		ncancel()
		if err != nil && ctx.Err() == nil {
			b.log.WithError(err).Debug("cannot NOTIFY the other instances; they find the work by polling")
		}
		select {
		case <-b.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// listenLoop holds a connection of its own that LISTENs for other
// instances' wake-ups, and reconnects when it is lost (polling covers the
// gap). With PollOnly it does nothing.
func (b *Broker) listenLoop() {
	defer b.loops.Done()
	if b.opts.PollOnly {
		return
	}
	ctx, cancel := b.stopCtx()
	defer cancel()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := b.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		b.log.WithError(err).Debug("LISTEN connection lost; reconnecting")
		select {
		case <-b.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (b *Broker) listen(ctx context.Context) error {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	c := conn.Hijack()
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "LISTEN "+quoteIdent(b.channel)); err != nil {
		return err
	}
	b.kickFetch() // anything notified while not listening
	for {
		if _, err := c.WaitForNotification(ctx); err != nil {
			return err
		}
		b.kickFetch()
	}
}
