package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
)

// renewLoop extends the leases of the attempts this instance runs, three
// times per lease period, in one script call.
func (b *Broker) renewLoop() { b.every(b.opts.Lease/3, b.renew) }

func (b *Broker) renew() {
	b.mu.Lock()
	args := make([]any, 0, 1+len(b.held))
	args = append(args, ms(b.opts.Now().Add(b.opts.Lease)))
	for _, h := range b.held {
		args = append(args, h.member)
	}
	b.mu.Unlock()
	if len(args) == 1 {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	lost, err := renewScript.Run(ctx, b.rdb, []string{b.keys.running}, args...).StringSlice()
	if err != nil {
		b.log.WithError(err).Warn("cannot renew leases; if Redis stays away they expire and other instances take over")
		return
	}
	for _, m := range lost {
		id, _ := memberID(m)
		b.log.WithField("task_id", id).Warn("lease lost: another instance recovered this task; this attempt's result will be discarded")
	}
}

// every calls fn every interval until Close; it is the body of each
// background loop.
func (b *Broker) every(interval time.Duration, fn func()) {
	defer b.loops.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// maintainLoop promotes due retries and recovers tasks whose lease ran out.
func (b *Broker) maintainLoop() {
	b.every(b.opts.MaintainInterval, func() {
		if err := b.maintain(); err != nil && b.ctx.Err() == nil {
			b.log.WithError(err).Debug("maintenance skipped")
		}
	})
}

func (b *Broker) maintain() error {
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	now := b.opts.Now()
	expired, err := maintainScript.Run(ctx, b.rdb,
		[]string{b.keys.ready, b.keys.running, b.keys.delayed, b.keys.seq, b.keys.wake},
		b.keys.task, ms(now), strconv.FormatInt(now.UnixNano(), 10)).StringSlice()
	if err != nil {
		return unavailable(err)
	}
	for _, member := range expired {
		if err := b.recover(ctx, member, now); err != nil {
			b.log.WithError(err).WithField("member", member).Warn("cannot recover a task whose lease expired")
		}
	}
	return nil
}

// recover fails the attempt of a task whose lease expired, under the
// retry policy, fenced by the lease it read: if the owner renewed or
// settled meanwhile, or another instance recovered it first, nothing
// changes.
func (b *Broker) recover(ctx context.Context, member string, now time.Time) error {
	id, err := memberID(member)
	if err != nil {
		return b.rdb.ZRem(ctx, b.keys.running, member).Err() // not ours to read
	}
	raw, err := b.rdb.Get(ctx, b.keys.task+id.String()).Result()
	if errors.Is(err, goredis.Nil) {
		return b.rdb.ZRem(ctx, b.keys.running, member).Err() // the record is gone
	}
	if err != nil {
		return unavailable(err)
	}
	task, err := decodeRecord(id, raw)
	if err == nil {
		task, err = runningView(task, member)
	}
	if err != nil {
		return err
	}
	attempt := task.Attempts()
	cause := fmt.Sprintf("lease expired: the instance running attempt %d stopped renewing it (it crashed or lost Redis)", attempt)
	if err := task.Fail(now, cause, b.opts.Policy, b.opts.Random()); err != nil {
		return err
	}
	err = b.settle(ctx, task, lease{member: member, attempt: attempt}, ms(now))
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

// sweepLoop looks through every task record for tasks that no set holds:
// a record stored as running without a lease (which this version never
// writes, but an older one, a manual edit or a bug could), or a pending or
// retrying task missing from its set. It puts each back, so nothing stays
// stuck.
func (b *Broker) sweepLoop() {
	b.every(b.opts.SweepInterval, func() {
		if n, err := b.sweep(); err != nil && b.ctx.Err() == nil {
			b.log.WithError(err).Debug("sweep for stuck tasks stopped early")
		} else if n > 0 {
			b.log.WithField("count", n).Warn("found tasks that no queue set held; put them back")
		}
	})
}

func (b *Broker) sweep() (repaired int, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.SweepInterval)
	defer cancel()
	iter := b.rdb.Scan(ctx, 0, b.keys.task+"*", 1000).Iterator()
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

// repairBatch checks one batch of record keys cheaply (one MGET, one
// ZMSCORE per set) and runs the repair script only on tasks no set holds.
func (b *Broker) repairBatch(ctx context.Context, keys []string) (int, error) {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k[len(b.keys.task):]
	}
	pipe := b.rdb.Pipeline()
	vals := pipe.MGet(ctx, keys...)
	inReady := pipe.ZMScore(ctx, b.keys.ready, ids...)
	inDelayed := pipe.ZMScore(ctx, b.keys.delayed, ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	repaired := 0
	for i, v := range vals.Val() {
		raw, ok := v.(string)
		if !ok || inReady.Val()[i] != 0 || inDelayed.Val()[i] != 0 {
			continue // gone, or where it belongs (a zero score never occurs)
		}
		var r record
		if json.Unmarshal([]byte(raw), &r) != nil || r.Status == domain.StatusSucceeded.String() || r.Status == domain.StatusFailed.String() {
			continue
		}
		now := b.opts.Now()
		n, err := repairScript.Run(ctx, b.rdb,
			[]string{b.keys.ready, b.keys.running, b.keys.delayed, b.keys.seq, b.keys.wake, keys[i]},
			ids[i], strconv.FormatInt(now.UnixNano(), 10)).Int()
		if err != nil {
			return repaired, err
		}
		repaired += n
	}
	return repaired, nil
}
