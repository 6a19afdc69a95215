package postgres

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/taskqueue/taskqueue/domain"
)

// taskCols are the columns a task is read from, in record.scan's order.
const taskCols = "id, type, fkey, priority, status, max_retries, attempts, retries_used, payload, last_error, " +
	"created_at, updated_at, started_at, finished_at, next_attempt_at, run_at, result, result_truncated, seq, pending_since"

// record is a task row as read.
type record struct {
	snap         domain.TaskSnapshot
	seq          int64
	pendingSince time.Time
}

// scan reads the columns of taskCols, prefixed by extra destinations.
func scanRecord(row pgx.Row, extra ...any) (record, error) {
	var r record
	var status int16
	var priority int16
	var started, finished, next, runAt, pendingSince *int64
	var created, updated int64
	var result []byte
	dest := append(extra, &r.snap.ID, &r.snap.Type, &r.snap.Key, &priority, &status, &r.snap.MaxRetries, &r.snap.Attempts,
		&r.snap.RetriesUsed, &r.snap.Payload, &r.snap.LastError, &created, &updated, &started, &finished, &next, &runAt,
		&result, &r.snap.Result.Truncated, &r.seq, &pendingSince)
	if err := row.Scan(dest...); err != nil {
		return record{}, err
	}
	r.snap.Status = domain.Status(status)
	r.snap.Priority = int(priority)
	r.snap.CreatedAt, r.snap.UpdatedAt = fromNanos(created), fromNanos(updated)
	r.snap.StartedAt, r.snap.FinishedAt = fromNullNanos(started), fromNullNanos(finished)
	r.snap.NextAttemptAt, r.snap.RunAt = fromNullNanos(next), fromNullNanos(runAt)
	r.pendingSince = fromNullNanos(pendingSince)
	if len(result) > 0 {
		r.snap.Result.Data = result
	}
	return r, nil
}

// task rebuilds the domain task of a record.
func (r record) task() (*domain.Task, error) {
	t, err := domain.RehydrateTask(r.snap)
	if err != nil {
		return nil, fmt.Errorf("task %s as stored is not valid: %w", r.snap.ID, err)
	}
	return t, nil
}

func nanos(t time.Time) int64 { return t.UnixNano() }

// nullNanos is a nullable time column's value: nil for the zero time.
func nullNanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func fromNullNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return fromNanos(*n)
}

// waitingStatuses are the statuses --queue-size bounds, as the domain says.
func waitingStatuses() []int16 {
	var out []int16
	for _, s := range domain.Statuses() {
		if s.Waiting() {
			out = append(out, int16(s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// statusList renders statuses for an IN list (they are numbers, not
// input).
func statusList(ss []int16) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmt.Sprint(s)
	}
	return strings.Join(parts, ", ")
}

const stripes = 16

func stripe() int16 { return int16(rand.IntN(stripes)) }

// move is one task's move from the state it had (fenced by its status
// and attempt count) to the state of task.
type move struct {
	task       *domain.Task
	oldStatus  domain.Status
	oldAttempt int
	// newSeq gives the task a new place at the back of its priority
	// (it became pending again); otherwise it keeps its old one.
	newSeq bool
	// pendingSince is when it became pending (kept for a hand-back).
	pendingSince time.Time
	owner        string
	leaseUntil   time.Time
}

// moves are written by one statement: the rows, fenced; the counters of
// the rows that moved; and it returns the ids that moved.
type moves []move

// sql returns the statement that writes ms in schema s, and its arguments.
func (ms moves) args(s string) (string, []any) {
	sort.Slice(ms, func(i, j int) bool {
		a, b := ms[i].task.ID(), ms[j].task.ID()
		return bytes.Compare(a[:], b[:]) < 0
	})
	n := len(ms)
	ids := make([]uuid.UUID, n)
	oldStatus, status := make([]int16, n), make([]int16, n)
	oldAttempts, attempts, retriesUsed := make([]int32, n), make([]int32, n), make([]int32, n)
	lastError, owner := make([]string, n), make([]*string, n)
	updated := make([]int64, n)
	started, finished, next, runAt := make([]*int64, n), make([]*int64, n), make([]*int64, n), make([]*int64, n)
	pending, due, lease := make([]*int64, n), make([]*int64, n), make([]*int64, n)
	result := make([][]byte, n)
	truncated, newSeq := make([]bool, n), make([]bool, n)
	for i, m := range ms {
		t := m.task
		ids[i] = t.ID()
		oldStatus[i], status[i] = int16(m.oldStatus), int16(t.Status())
		oldAttempts[i], attempts[i] = int32(m.oldAttempt), int32(t.Attempts())
		retriesUsed[i] = int32(t.MaxRetries() - t.RetriesLeft())
		lastError[i] = t.LastError()
		updated[i] = nanos(t.UpdatedAt())
		started[i], finished[i] = nullNanos(t.StartedAt()), nullNanos(t.FinishedAt())
		next[i], runAt[i] = nullNanos(t.NextAttemptAt()), nullNanos(t.RunAt())
		due[i] = nullNanos(t.DueAt())
		if t.Status() == domain.StatusPending {
			pending[i] = nullNanos(m.pendingSince)
		}
		if t.Status() == domain.StatusRunning {
			o := m.owner
			owner[i], lease[i] = &o, nullNanos(m.leaseUntil)
			pending[i] = nullNanos(m.pendingSince) // kept for a hand-back
		}
		result[i] = t.Result().Data
		truncated[i] = t.Result().Truncated
		newSeq[i] = m.newSeq
	}
	q := `WITH u AS (
  UPDATE ` + s + `.tasks t SET status = u.status, attempts = u.attempts, retries_used = u.retries_used,
    last_error = u.last_error, updated_at = u.updated_at, started_at = u.started_at, finished_at = u.finished_at,
    next_attempt_at = u.next_attempt_at, run_at = u.run_at, result = u.result, result_truncated = u.result_truncated,
    seq = CASE WHEN u.new_seq THEN nextval('` + s + `.seq') ELSE t.seq END,
    pending_since = u.pending_since, due_at = u.due_at, owner = u.owner, lease_until = u.lease_until
  FROM unnest($1::uuid[], $2::int2[], $3::int4[], $4::int2[], $5::int4[], $6::int4[], $7::text[], $8::int8[],
    $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::bytea[], $14::bool[], $15::bool[], $16::int8[],
    $17::int8[], $18::text[], $19::int8[])
    AS u(id, old_status, old_attempts, status, attempts, retries_used, last_error, updated_at,
      started_at, finished_at, next_attempt_at, run_at, result, result_truncated, new_seq, pending_since,
      due_at, owner, lease_until)
  WHERE t.id = u.id AND t.status = u.old_status AND t.attempts = u.old_attempts
  RETURNING t.id, t.type, t.priority, t.fkey, t.seq, u.old_status, t.status
), tr AS (` + turnsUpsert(s, "u") + `
), c AS (
  INSERT INTO ` + s + `.counts (type, status, stripe, n)
  SELECT type, st, $20, sum(d) FROM (
    SELECT type, old_status AS st, -1 AS d FROM u UNION ALL SELECT type, status, 1 FROM u) x
  GROUP BY type, st HAVING sum(d) <> 0 ORDER BY type, st
  ON CONFLICT (type, status, stripe) DO UPDATE SET n = ` + s + `.counts.n + excluded.n
)
SELECT id FROM u`
	return q, []any{ids, oldStatus, oldAttempts, status, attempts, retriesUsed, lastError, updated,
		started, finished, next, runAt, result, truncated, newSeq, pending, due, owner, lease, stripe()}
}

// turnsUpsert is the statement that gives every key with a task that
// became pending (the rows of CTE from with status 1) its row in turns:
// a key that had no pending task joins at the back (its first task's
// place); a key already waiting keeps its turn. It locks the key's row
// either way, so pruning cannot remove it under this transaction.
func turnsUpsert(s, from string) string {
	return `
  INSERT INTO ` + s + `.turns AS x (type, priority, fkey, turn)
  SELECT type, priority, fkey, min(seq) * 1024 FROM ` + from + ` WHERE status = 1
  GROUP BY type, priority, fkey ORDER BY type, priority, fkey
  ON CONFLICT (type, priority, fkey) DO UPDATE SET turn = excluded.turn
  WHERE x.turn < excluded.turn AND NOT EXISTS (SELECT 1 FROM ` + s + `.tasks t
    WHERE t.status = 1 AND t.type = excluded.type AND t.priority = excluded.priority AND t.fkey = excluded.fkey)`
}

// insertArgs returns the statement that stores new tasks in schema s when
// the waiting tasks and those of the batch that wait fit under size, and
// its arguments. It returns how many rows it stored: all or none. A size
// of 0 stores them without counting (the caller did, under the lock).
func insertArgs(s string, tasks []*domain.Task, size int) (string, []any) {
	n := len(tasks)
	ids := make([]uuid.UUID, n)
	types, keys, lastError := make([]string, n), make([]string, n), make([]string, n)
	priority, status := make([]int16, n), make([]int16, n)
	maxRetries, attempts, retriesUsed := make([]int32, n), make([]int32, n), make([]int32, n)
	payload, result := make([][]byte, n), make([][]byte, n)
	created, updated := make([]int64, n), make([]int64, n)
	started, finished, next, runAt, pending, due := make([]*int64, n), make([]*int64, n), make([]*int64, n), make([]*int64, n), make([]*int64, n), make([]*int64, n)
	truncated := make([]bool, n)
	waiting := 0
	for i, t := range tasks {
		ids[i], types[i], keys[i] = t.ID(), t.Type(), t.Key()
		priority[i], status[i] = int16(t.Priority().Level()), int16(t.Status())
		maxRetries[i], attempts[i], retriesUsed[i] = int32(t.MaxRetries()), int32(t.Attempts()), int32(t.MaxRetries()-t.RetriesLeft())
		payload[i], result[i], truncated[i] = t.Payload(), t.Result().Data, t.Result().Truncated
		if payload[i] == nil {
			payload[i] = []byte{}
		}
		lastError[i] = t.LastError()
		created[i], updated[i] = nanos(t.CreatedAt()), nanos(t.UpdatedAt())
		started[i], finished[i], next[i], runAt[i] = nullNanos(t.StartedAt()), nullNanos(t.FinishedAt()), nullNanos(t.NextAttemptAt()), nullNanos(t.RunAt())
		due[i] = nullNanos(t.DueAt())
		if t.Status() == domain.StatusPending {
			pending[i] = nullNanos(t.UpdatedAt())
		}
		if t.Status().Waiting() {
			waiting++
		}
	}
	q := `WITH ins AS (
  INSERT INTO ` + s + `.tasks (id, type, fkey, priority, status, max_retries, attempts, retries_used, payload, last_error,
    created_at, updated_at, started_at, finished_at, next_attempt_at, run_at, result, result_truncated, seq, pending_since, due_at)
  SELECT id, type, fkey, priority, status, max_retries, attempts, retries_used, payload, last_error,
    created_at, updated_at, started_at, finished_at, next_attempt_at, run_at, result, result_truncated,
    CASE WHEN status = 1 THEN nextval('` + s + `.seq') ELSE 0 END, pending_since, due_at
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::int2[], $6::int4[], $7::int4[], $8::int4[], $9::bytea[],
    $10::text[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::bytea[], $18::bool[],
    $19::int8[], $20::int8[]) WITH ORDINALITY
    AS x(id, type, fkey, priority, status, max_retries, attempts, retries_used, payload, last_error, created_at, updated_at,
      started_at, finished_at, next_attempt_at, run_at, result, result_truncated, pending_since, due_at, ord)
  WHERE $21::int8 = 0 OR (SELECT coalesce(sum(n), 0) FROM ` + s + `.counts WHERE status IN (` + statusList(waitingStatuses()) + `)) + $21 <= $22
  ORDER BY ord
  RETURNING type, priority, fkey, seq, status
), tr AS (` + turnsUpsert(s, "ins") + `
), c AS (
  INSERT INTO ` + s + `.counts (type, status, stripe, n)
  SELECT type, status, $23, count(*) FROM ins GROUP BY type, status ORDER BY type, status
  ON CONFLICT (type, status, stripe) DO UPDATE SET n = ` + s + `.counts.n + excluded.n
)
SELECT count(*) FROM ins`
	check := int64(waiting) // 0: no check (size <= 0, the caller counted)
	if size <= 0 {
		check = 0
	}
	return q, []any{ids, types, keys, priority, status, maxRetries, attempts, retriesUsed, payload, lastError,
		created, updated, started, finished, next, runAt, result, truncated, pending, due, check, int64(size), stripe()}
}
