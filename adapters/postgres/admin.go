package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Update applies change to the task under its row lock and writes the
// result in the same transaction; see ports.TaskAdmin. A change that
// makes a task wait to run again counts the waiting tasks under the
// queue's bound lock first.
func (b *Broker) Update(ctx context.Context, id uuid.UUID, change func(*domain.Task) error) (*domain.Task, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	var out *domain.Task
	var wakeUp bool
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		r, t, err := b.lockTask(ctx, tx, id)
		if err != nil {
			return err
		}
		old, oldAttempt := t.Status(), t.Attempts()
		if err := change(t); err != nil {
			return refused{err}
		}
		now := b.opts.Now()
		st := t.Status()
		if st.Waiting() && !old.Waiting() {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", b.boundKey()); err != nil {
				return err
			}
			var waiting int64
			if err := tx.QueryRow(ctx, "SELECT coalesce(sum(n), 0)::int8 FROM "+b.s+".counts WHERE status IN ("+statusList(waitingStatuses())+")").Scan(&waiting); err != nil {
				return err
			}
			if waiting+1 > int64(b.opts.QueueSize) {
				return refused{domain.ErrQueueFull}
			}
		}
		m := move{task: t, oldStatus: old, oldAttempt: oldAttempt}
		switch {
		case st == domain.StatusPending && old != domain.StatusPending:
			m.newSeq, m.pendingSince = true, now
			wakeUp = true
		case st == domain.StatusPending:
			m.pendingSince = r.pendingSince
		case st == domain.StatusRunning:
			return refused{&domain.TransitionError{Action: "start by hand", From: old}}
		}
		q, args := moves{m}.args(b.s)
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return err
		}
		if len(ids) != 1 {
			return errors.New("postgres: a task changed under its row lock")
		}
		out = t
		return nil
	})
	if err != nil {
		return nil, answer(ctx, err)
	}
	if out.Status() != domain.StatusRunning {
		b.tellHeld(id)
	}
	if wakeUp {
		b.wake()
	}
	return out, nil
}

// lockTask reads task id under its row lock, as stored and as the
// domain's task; a task missing or past its retention is refused with
// domain.ErrTaskNotFound.
func (b *Broker) lockTask(ctx context.Context, tx pgx.Tx, id uuid.UUID) (record, *domain.Task, error) {
	r, err := scanRecord(tx.QueryRow(ctx, "SELECT "+taskCols+" FROM "+b.s+".tasks WHERE id = $1 FOR UPDATE", id))
	if errors.Is(err, pgx.ErrNoRows) || err == nil && b.expired(r.snap.Status, r.snap.FinishedAt) {
		return record{}, nil, refused{domain.ErrTaskNotFound}
	}
	if err != nil {
		return record{}, nil, err
	}
	t, err := r.task()
	return r, t, err
}

// refused carries the domain's (or change's) answer out of a
// transaction, so it is told apart from the database's errors.
type refused struct{ err error }

func (r refused) Error() string { return r.err.Error() }

// answer returns a transaction's error for the caller: a refusal as it
// is, anything else classified.
func answer(ctx context.Context, err error) error {
	var r refused
	if errors.As(err, &r) {
		return r.err
	}
	return classify(ctx, err)
}

// tellHeld tells this instance's attempt of task id, if it runs one, that
// it no longer counts.
func (b *Broker) tellHeld(id uuid.UUID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h, ok := b.held[id]; ok && !h.closed {
		h.closed = true
		close(h.cancelled)
		delete(b.held, id)
	}
}

// UpdateMany applies change to up to limit tasks matching filter, newest
// first, each as Update would; see ports.TaskAdmin.
func (b *Broker) UpdateMany(ctx context.Context, filter ports.ListFilter, limit int, change func(*domain.Task) error) (int, error) {
	changed := 0
	after := uuid.Nil
	for changed < limit {
		page, err := b.List(ctx, filter, after, min(limit-changed, 500))
		if err != nil {
			return changed, err
		}
		for _, t := range page.Tasks {
			if changed >= limit {
				break
			}
			_, err := b.Update(ctx, t.ID(), change)
			switch {
			case err == nil:
				changed++
			case errors.Is(err, domain.ErrQueueFull), errors.Is(err, domain.ErrUnavailable), ctx.Err() != nil:
				return changed, err
			}
		}
		if page.Next == uuid.Nil {
			break
		}
		after = page.Next
	}
	return changed, nil
}

// Delete removes a task that check accepts, under its row lock; see
// ports.TaskAdmin.
func (b *Broker) Delete(ctx context.Context, id uuid.UUID, check func(*domain.Task) error) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, t, err := b.lockTask(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := check(t); err != nil {
			return refused{err}
		}
		_, err = tx.Exec(ctx, `WITH d AS (DELETE FROM `+b.s+`.tasks WHERE id = $1 RETURNING type, status)
INSERT INTO `+b.s+`.counts (type, status, stripe, n) SELECT type, status, $2, -1 FROM d
ON CONFLICT (type, status, stripe) DO UPDATE SET n = `+b.s+`.counts.n + excluded.n`, id, stripe())
		return err
	})
	if err != nil {
		return answer(ctx, err)
	}
	b.tellHeld(id)
	return nil
}

// List pages through tasks newest first; see ports.TaskReader. Each
// (status, type) pair of the filter is one index range read newest first
// and limited, so a page costs O(limit × pairs), whatever the number of
// tasks.
func (b *Broker) List(ctx context.Context, filter ports.ListFilter, after uuid.UUID, limit int) (ports.ListPage, error) {
	if limit < 1 {
		return ports.ListPage{}, nil
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	args := []any{limit + 1}
	cursor := ""
	if after != uuid.Nil {
		args = append(args, after)
		cursor = " AND id < $2"
	}
	var parts []string
	switch {
	case len(filter.Statuses) == 0 && len(filter.Types) == 0:
		parts = []string{"SELECT " + taskCols + " FROM " + b.s + ".tasks WHERE true" + cursor}
	case len(filter.Types) == 0:
		for _, st := range filter.Statuses {
			parts = append(parts, fmt.Sprintf("SELECT %s FROM %s.tasks WHERE status = %d%s", taskCols, b.s, int(st), cursor))
		}
	default:
		statuses := filter.Statuses
		if len(statuses) == 0 {
			statuses = domain.Statuses()
		}
		for _, typ := range filter.Types {
			args = append(args, typ)
			for _, st := range statuses {
				parts = append(parts, fmt.Sprintf("SELECT %s FROM %s.tasks WHERE type = $%d AND status = %d%s", taskCols, b.s, len(args), int(st), cursor))
			}
		}
	}
	for i := range parts {
		parts[i] = "(" + parts[i] + " ORDER BY id DESC LIMIT $1)"
	}
	q := "SELECT * FROM (" + strings.Join(parts, " UNION ALL ") + ") x ORDER BY id DESC LIMIT $1"
	rows, err := b.pool.Query(ctx, q, args...)
	if err != nil {
		return ports.ListPage{}, classify(ctx, err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (record, error) { return scanRecord(row) })
	if err != nil {
		return ports.ListPage{}, classify(ctx, err)
	}
	var page ports.ListPage
	for _, r := range recs {
		if len(page.Tasks) == limit {
			page.Next = page.Tasks[limit-1].ID()
			break
		}
		if b.expired(r.snap.Status, r.snap.FinishedAt) {
			continue
		}
		t, err := r.task()
		if err != nil {
			return ports.ListPage{}, err
		}
		page.Tasks = append(page.Tasks, t)
	}
	return page, nil
}

// Stats sums the counters and reads each type's oldest pending task (one
// index probe per type with pending tasks); see ports.StatsReader.
func (b *Broker) Stats(ctx context.Context) (ports.Stats, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	st := ports.Stats{ByType: map[string]map[domain.Status]int64{}}
	batch := &pgx.Batch{}
	batch.Queue("SELECT type, status, sum(n)::int8 FROM " + b.s + ".counts GROUP BY type, status HAVING sum(n) <> 0").Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var typ string
			var s int16
			var n int64
			if err := rows.Scan(&typ, &s, &n); err != nil {
				return err
			}
			if st.ByType[typ] == nil {
				st.ByType[typ] = map[domain.Status]int64{}
			}
			st.ByType[typ][domain.Status(s)] = n
		}
		return rows.Err()
	})
	batch.Queue(`SELECT c.type, h.pending_since FROM (
  SELECT type FROM ` + b.s + `.counts WHERE status = 1 GROUP BY type HAVING sum(n) > 0) c,
LATERAL (SELECT pending_since FROM ` + b.s + `.tasks t WHERE t.status = 1 AND t.seq > 0 AND t.type = c.type ORDER BY t.seq LIMIT 1) h`).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var typ string
			var since *int64
			if err := rows.Scan(&typ, &since); err != nil {
				return err
			}
			st.NotePending(typ, fromNullNanos(since))
		}
		return rows.Err()
	})
	if err := b.pool.SendBatch(ctx, batch).Close(); err != nil {
		return ports.Stats{}, classify(ctx, err)
	}
	return st, nil
}

// Reserve claims an idempotency key; see ports.IdempotencyStore. The
// primary key lets one of several instances in.
func (b *Broker) Reserve(ctx context.Context, key, fingerprint string, hold time.Duration) (ports.IdempotencyRecord, bool, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	for {
		now := b.opts.Now()
		var claimed bool
		err := b.pool.QueryRow(ctx, `INSERT INTO `+b.s+`.idempotency AS i (key, fingerprint, done, response, reserved_at, expires_at)
VALUES ($1, $2, false, NULL, $3, $4)
ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, done = false, response = NULL,
  reserved_at = excluded.reserved_at, expires_at = excluded.expires_at
WHERE i.expires_at <= $3
RETURNING true`, key, fingerprint, nanos(now), nanos(now.Add(hold))).Scan(&claimed)
		if err == nil {
			return ports.IdempotencyRecord{Fingerprint: fingerprint}, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return ports.IdempotencyRecord{}, false, classify(ctx, err)
		}
		var rec ports.IdempotencyRecord
		err = b.pool.QueryRow(ctx, "SELECT fingerprint, done, response FROM "+b.s+".idempotency WHERE key = $1 AND expires_at > $2", key, nanos(now)).
			Scan(&rec.Fingerprint, &rec.Done, &rec.Response)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // released or expired in between: try again
		}
		if err != nil {
			return ports.IdempotencyRecord{}, false, classify(ctx, err)
		}
		return rec, false, nil
	}
}

// Complete stores the response under a reserved key, kept until ttl after
// the key was reserved; see ports.IdempotencyStore.
func (b *Broker) Complete(ctx context.Context, key string, rec ports.IdempotencyRecord, ttl time.Duration) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	_, err := b.pool.Exec(ctx, "UPDATE "+b.s+".idempotency SET fingerprint = $2, done = $3, response = $4, expires_at = reserved_at + $5 WHERE key = $1",
		key, rec.Fingerprint, rec.Done, rec.Response, ttl.Nanoseconds())
	return classify(ctx, err)
}

// Release frees a reserved key at once; see ports.IdempotencyStore.
func (b *Broker) Release(ctx context.Context, key string) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	_, err := b.pool.Exec(ctx, "DELETE FROM "+b.s+".idempotency WHERE key = $1 AND NOT done", key)
	return classify(ctx, err)
}

// Pause stops new attempts of typ on every instance; see ports.TypeAdmin.
func (b *Broker) Pause(ctx context.Context, typ string) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	_, err := b.pool.Exec(ctx, "INSERT INTO "+b.s+".paused (type) VALUES ($1) ON CONFLICT DO NOTHING", typ)
	return classify(ctx, err)
}

// Resume lets attempts of typ start again, and wakes the instances.
func (b *Broker) Resume(ctx context.Context, typ string) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if _, err := b.pool.Exec(ctx, "DELETE FROM "+b.s+".paused WHERE type = $1", typ); err != nil {
		return classify(ctx, err)
	}
	b.wake()
	return nil
}

// Paused returns the paused types, sorted.
func (b *Broker) Paused(ctx context.Context) ([]string, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	rows, err := b.pool.Query(ctx, "SELECT type FROM "+b.s+".paused ORDER BY type")
	if err != nil {
		return nil, classify(ctx, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, classify(ctx, err)
	}
	return out, nil
}

// Counts says how many tasks of the whole shared queue wait and run.
type Counts struct {
	Pending, Running, Waiting int64 // Waiting: scheduled and retrying
}

// Counts sums the counters, or returns domain.ErrUnavailable.
func (b *Broker) Counts(ctx context.Context) (Counts, error) {
	st, err := b.Stats(ctx)
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, by := range st.ByType {
		c.Pending += by[domain.StatusPending]
		c.Running += by[domain.StatusRunning]
		c.Waiting += by[domain.StatusScheduled] + by[domain.StatusRetrying]
	}
	return c, nil
}
