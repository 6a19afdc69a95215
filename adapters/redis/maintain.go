package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
)

// renewLoop extends the leases of the attempts this instance runs, three
// times per lease period, in one script call. A renewal that fails is
// tried again soon (100 ms, doubling), so one lost call during a short
// outage does not cost a lease.
func (b *Broker) renewLoop() {
	defer b.loops.Done()
	interval := b.opts.Lease / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	retry := 100 * time.Millisecond
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if b.renew() {
			t.Reset(interval)
			retry = 100 * time.Millisecond
			continue
		}
		t.Reset(min(retry, interval))
		retry *= 2
	}
}

// renew renews every held lease; it reports false when Redis could not be
// asked.
func (b *Broker) renew() bool {
	b.mu.Lock()
	args := make([]any, 0, 2+2*len(b.held))
	start := b.opts.Now()
	deadline := start.Add(b.opts.Lease)
	args = append(args, b.keys.tag, ms(deadline))
	tokens := make(map[uuid.UUID]string, len(b.held))
	for id, h := range b.held {
		args = append(args, id.String(), h.token)
		tokens[id] = h.token
	}
	b.mu.Unlock()
	if len(tokens) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	lost, err := b.scripts.renew.Run(ctx, b.rdb, b.keys.all(), args...).StringSlice()
	if err != nil {
		if b.ctx.Err() == nil && !b.renewFailing.Swap(true) {
			b.log.WithError(classify(err)).Warn("cannot renew leases; retrying; if Redis stays away past a lease, other instances take over its tasks")
		}
		return false
	}
	if b.renewFailing.Swap(false) {
		b.log.Info("renewing leases again")
	}
	gone := make(map[uuid.UUID]bool, len(lost))
	for _, raw := range lost {
		id, _ := uuid.Parse(raw)
		gone[id] = true
	}
	b.mu.Lock()
	for id, token := range tokens {
		h, ok := b.held[id]
		switch {
		case !ok || h.token != token: // settled meanwhile
		case gone[id]:
			b.drop(id, h)
			b.log.WithField("task_id", id).Warn("lease lost: the task was cancelled or recovered by another instance while it ran here; this attempt's result will be discarded")
		default:
			h.deadline = deadline
			b.held[id] = h
		}
	}
	b.mu.Unlock()
	return true
}

// cancelLoop tells this instance's attempts whose task was cancelled (or
// taken over) to stop, every CancelCheckInterval: one read-only script
// call when attempts run, none when idle.
func (b *Broker) cancelLoop() {
	b.every(b.opts.CancelCheckInterval, nil, func() {
		b.mu.Lock()
		if len(b.held) == 0 {
			b.mu.Unlock()
			return
		}
		args := make([]any, 0, 1+2*len(b.held))
		args = append(args, b.keys.tag)
		for id, h := range b.held {
			args = append(args, id.String(), h.token)
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
		defer cancel()
		gone, err := b.scripts.check.Run(ctx, b.rdb, b.keys.all(), args...).StringSlice()
		if err != nil {
			return // Redis is away: renewals say so
		}
		for _, raw := range gone {
			id, _ := uuid.Parse(raw)
			b.mu.Lock()
			if h, ok := b.held[id]; ok {
				b.drop(id, h)
			}
			b.mu.Unlock()
		}
	})
}

// drop forgets an attempt that no longer counts and tells it to stop.
// The caller holds b.mu.
func (b *Broker) drop(id uuid.UUID, h lease) {
	delete(b.held, id)
	if h.cancelled != nil {
		close(h.cancelled)
	}
}

// every calls fn every interval, and whenever kick has a value, until
// Close; it is the body of the maintenance and sweep loops.
func (b *Broker) every(interval time.Duration, kick <-chan struct{}, fn func()) {
	defer b.loops.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-kick:
		}
		fn()
	}
}

// kickMaintain asks the maintenance loop to run now.
func (b *Broker) kickMaintain() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// maintainLoop promotes due retries, trims the finished index, puts back
// attempts whose dequeue reply was lost, and recovers tasks whose lease
// ran out.
func (b *Broker) maintainLoop() {
	b.every(b.opts.MaintainInterval, b.kick, func() {
		if err := b.maintain(); err != nil && b.ctx.Err() == nil {
			b.log.WithError(err).Debug("maintenance skipped")
		}
	})
}

func (b *Broker) maintain() error {
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	if err := b.reclaimLost(ctx); err != nil {
		return err
	}
	now := b.opts.Now()
	expired, err := b.scripts.maintain.Run(ctx, b.rdb, b.keys.all(),
		b.keys.tag, ms(now), strconv.FormatInt(now.UnixNano(), 10), b.opts.Retention.Milliseconds(), b.opts.FailedRetention.Milliseconds()).StringSlice()
	if err != nil {
		return classify(err)
	}
	for _, raw := range expired {
		if err := b.recover(ctx, raw, now); err != nil {
			b.log.WithError(err).WithField("task_id", raw).Warn("cannot recover a task whose lease expired")
		}
	}
	return nil
}

// reclaimLost puts back the attempts started by dequeue calls whose reply
// was lost, which no worker runs. It looks through the running set, which
// only happens after such a loss.
func (b *Broker) reclaimLost(ctx context.Context) error {
	b.mu.Lock()
	prefixes := append([]string(nil), b.lost...)
	b.mu.Unlock()
	if len(prefixes) == 0 {
		return nil
	}
	args := []any{b.keys.tag, "prefixes"}
	for _, p := range prefixes {
		args = append(args, p)
	}
	n, err := b.scripts.undo.Run(ctx, b.rdb, b.keys.all(), args...).Int()
	if err != nil {
		return classify(err)
	}
	b.mu.Lock()
	b.lost = b.lost[len(prefixes):]
	b.mu.Unlock()
	if n > 0 {
		b.log.WithField("count", n).Info("put back tasks that Redis started for this instance while its reply was lost")
	}
	return nil
}

// recover fails the attempt of a task whose lease expired, under the
// retry policy, fenced by the token and lease it read: if the owner
// renewed or settled meanwhile, or another instance recovered it first,
// nothing changes.
func (b *Broker) recover(ctx context.Context, rawID string, now time.Time) error {
	id, err := uuid.Parse(rawID)
	if err != nil {
		return b.rdb.ZRem(ctx, b.keys.running, rawID).Err() // not ours to read
	}
	vals, err := b.rdb.HMGet(ctx, b.keys.task+rawID, "d", "s").Result()
	if err != nil {
		return classify(err)
	}
	d, _ := vals[0].(string)
	s, _ := vals[1].(string)
	if d == "" || s == "" {
		return b.rdb.ZRem(ctx, b.keys.running, rawID).Err() // the record is gone
	}
	task, st, err := decodeRecord(id, d, s, "")
	if err != nil {
		return err
	}
	if task.Status() != domain.StatusRunning {
		return nil // settled meanwhile; the script would refuse anyway
	}
	attempt := task.Attempts()
	instance := st.Instance
	if instance == "" {
		instance = "an unknown instance"
	}
	cause := fmt.Sprintf("lease expired: %s stopped renewing attempt %d (it crashed, hung or lost Redis)", instance, attempt)
	if err := task.Fail(now, cause, b.opts.Policy, b.opts.Random()); err != nil {
		return err
	}
	err = b.settle(ctx, task, lease{token: st.Token, attempt: attempt}, ms(now), false)
	if errors.Is(err, domain.ErrStaleAttempt) {
		return nil // renewed, settled or recovered meanwhile
	}
	if err == nil {
		entry := b.log.WithFields(logrus.Fields{"task_id": id, "type": task.Type(), "attempt": attempt, "error": cause})
		if task.WillRetry() {
			entry.WithField("next_attempt_at", task.NextAttemptAt().Format(time.RFC3339Nano)).Warn("recovered a task whose lease expired; will retry")
		} else {
			entry.Error("recovered a task whose lease expired; no retries left")
		}
	}
	return err
}

// sweepLoop looks through the task records for tasks that no set holds: a
// record whose state says running without a lease, or a pending or
// retrying task missing from its set (which this version never leaves,
// but a manual edit or a bug could). It puts each back, so nothing stays
// stuck. Only one instance of those sharing the queue sweeps in each
// interval: it takes a lock that expires with the interval.
func (b *Broker) sweepLoop() {
	b.every(b.opts.SweepInterval, nil, func() {
		ok, err := b.rdb.SetNX(b.ctx, b.keys.sweep, b.opts.Instance, b.opts.SweepInterval).Result()
		if err != nil || !ok {
			return // another instance sweeps this time, or Redis is away
		}
		b.sweeps.Add(1)
		if n, err := b.sweep(); err != nil && b.ctx.Err() == nil {
			b.log.WithError(err).Debug("sweep for stuck tasks stopped early")
		} else if n > 0 {
			b.log.WithField("count", n).Warn("found tasks that no queue set held; put them back")
		}
	})
}

// sweep checks every record's state in batches and repairs the ones that
// are waiting or running but in no set. Finished records cost one HGET.
func (b *Broker) sweep() (repaired int, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.SweepInterval)
	defer cancel()
	iter := b.rdb.ScanType(ctx, 0, b.keys.task+"*", 1000, "hash").Iterator()
	var batch []string
	for {
		more := iter.Next(ctx)
		if more {
			batch = append(batch, iter.Val())
		}
		if len(batch) == 500 || !more && len(batch) > 0 {
			n, err := b.repairBatch(ctx, batch)
			repaired += n
			if err != nil {
				return repaired, err
			}
			batch = batch[:0]
		}
		if !more {
			return repaired, iter.Err()
		}
	}
}

// repairBatch checks one batch of record keys cheaply (one HGET each, one
// ZMSCORE per set, pipelined, then one ZSCORE in its key's FIFO for each
// pending task) and runs the repair script only on tasks no set holds.
func (b *Broker) repairBatch(ctx context.Context, keys []string) (int, error) {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k[len(b.keys.task):]
	}
	pipe := b.rdb.Pipeline()
	states := make([]*goredis.StringCmd, len(keys))
	for i, k := range keys {
		states[i] = pipe.HGet(ctx, k, "s")
	}
	inDelayed := pipe.ZMScore(ctx, b.keys.delayed, ids...)
	inRunning := pipe.ZMScore(ctx, b.keys.running, ids...)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return 0, err
	}
	var suspects []string
	pipe = b.rdb.Pipeline()
	var inReady []*goredis.FloatCmd
	for i := range keys {
		raw, err := states[i].Result()
		if err != nil || inDelayed.Val()[i] != 0 || inRunning.Val()[i] != 0 {
			continue // gone, or where it belongs (no score is ever zero but a repaired lease)
		}
		var st state
		if json.Unmarshal([]byte(raw), &st) != nil {
			continue
		}
		if status, err := domain.ParseStatus(st.Status); err != nil || status.Finished() {
			continue
		}
		suspects = append(suspects, ids[i])
		if st.Status == domain.StatusPending.String() {
			inReady = append(inReady, pipe.ZScore(ctx, b.keys.fifo(st.Type, st.Priority, st.Key), ids[i]))
		} else {
			inReady = append(inReady, nil)
		}
	}
	if len(suspects) == 0 {
		return 0, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return 0, err
	}
	repaired := 0
	for i, id := range suspects {
		if inReady[i] != nil && inReady[i].Err() == nil {
			continue // in its FIFO
		}
		n, err := b.scripts.repair.Run(ctx, b.rdb, b.keys.all(), b.keys.tag, id).Int()
		if err != nil {
			return repaired, err
		}
		repaired += n
	}
	return repaired, nil
}
