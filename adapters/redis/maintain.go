package redis

import (
	"context"
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
// times per lease period, in one script call.
func (b *Broker) renewLoop() {
	defer b.loops.Done()
	t := time.NewTicker(b.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		args := make([]any, 0, 1+2*len(b.held))
		args = append(args, ms(b.opts.Now().Add(b.opts.Lease)))
		for id, h := range b.held {
			args = append(args, id.String(), h.token)
		}
		b.mu.Unlock()
		if len(args) == 1 {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
		lost, err := renewScript.Run(ctx, b.rdb, []string{b.keys.running, b.keys.lease}, args...).StringSlice()
		cancel()
		if err != nil {
			b.log.WithError(err).Warn("cannot renew leases; if Redis stays away they expire and other instances take over")
			continue
		}
		for _, id := range lost {
			b.log.WithField("task_id", id).Warn("lease lost: another instance recovered this task; this attempt's result will be discarded")
		}
	}
}

// maintainLoop promotes due retries and recovers tasks whose lease ran out.
func (b *Broker) maintainLoop() {
	defer b.loops.Done()
	t := time.NewTicker(b.opts.MaintainInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if err := b.maintain(); err != nil && b.ctx.Err() == nil {
			b.log.WithError(err).Debug("maintenance skipped")
		}
	}
}

func (b *Broker) maintain() error {
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	now := b.opts.Now()
	expired, err := maintainScript.Run(ctx, b.rdb,
		[]string{b.keys.ready, b.keys.running, b.keys.delayed, b.keys.seq, b.keys.wake, b.keys.finished},
		b.keys.task, ms(now), strconv.FormatInt(now.UnixNano(), 10), b.opts.Retention.Milliseconds()).StringSlice()
	if err != nil {
		return unavailable(err)
	}
	for _, id := range expired {
		if err := b.recover(ctx, id, now); err != nil {
			b.log.WithError(err).WithField("task_id", id).Warn("cannot recover a task whose lease expired")
		}
	}
	return nil
}

// recover fails the attempt of a task whose lease expired, under the
// retry policy, fenced by the lease it read: if the owner renewed or
// settled meanwhile, or another instance recovered it first, nothing
// changes.
func (b *Broker) recover(ctx context.Context, idStr string, now time.Time) error {
	id, err := uuid.Parse(idStr)
	if err != nil {
		return err
	}
	pipe := b.rdb.Pipeline()
	get := pipe.Get(ctx, b.keys.task+idStr)
	tok := pipe.HGet(ctx, b.keys.lease, idStr)
	_, _ = pipe.Exec(ctx)
	raw, err := get.Result()
	if errors.Is(err, goredis.Nil) {
		// The record is gone: drop the dangling lease.
		return b.rdb.ZRem(ctx, b.keys.running, idStr).Err()
	}
	if err != nil {
		return unavailable(err)
	}
	token, err := tok.Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return unavailable(err)
	}
	task, score, err := decodeRecord(id, raw)
	if err != nil {
		return err
	}
	attempt := task.Attempts()
	cause := fmt.Sprintf("lease expired: the instance running attempt %d stopped renewing it (it crashed or lost Redis)", attempt)
	if err := task.Fail(now, cause, b.opts.Policy, b.opts.Random()); err != nil {
		return err // not running: a settle won the race
	}
	err = b.settle(ctx, task, lease{token: token, attempt: attempt, score: score}, ms(now))
	if errors.Is(err, domain.ErrStaleAttempt) {
		return nil
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

// sweepLoop looks through every task record for running tasks that have
// no lease (which the scripts never leave, but a manual edit or a bug
// could) and gives them an expired one, so recovery takes them.
func (b *Broker) sweepLoop() {
	defer b.loops.Done()
	t := time.NewTicker(b.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if n, err := b.sweep(); err != nil && b.ctx.Err() == nil {
			b.log.WithError(err).Debug("sweep for running tasks without a lease stopped early")
		} else if n > 0 {
			b.log.WithField("count", n).Warn("found running tasks without a lease; they will be recovered")
		}
	}
}

func (b *Broker) sweep() (repaired int, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.SweepInterval)
	defer cancel()
	iter := b.rdb.Scan(ctx, 0, b.keys.task+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		vals, err := b.rdb.MGet(ctx, batch...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			raw, ok := v.(string)
			if !ok {
				continue
			}
			var r record
			if decodeErr := jsonUnmarshal(raw, &r); decodeErr != nil || r.Status != domain.StatusRunning.String() {
				continue
			}
			id := batch[i][len(b.keys.task):]
			n, err := repairScript.Run(ctx, b.rdb, []string{b.keys.running, b.keys.lease}, b.keys.task, id).Int()
			if err != nil {
				return err
			}
			repaired += n
		}
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return repaired, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return repaired, err
	}
	return repaired, flush()
}
