package redis

import (
	"context"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"

	"github.com/taskqueue/taskqueue/domain"
)

// call is one script run waiting for a pipeline.
type call struct {
	ctx    context.Context
	script *op
	keys   []string
	args   []any
	// state is callQueued until a pipeline sends the call (callSent) or
	// its caller gives up first (callAbandoned); an abandoned call is
	// never sent.
	state atomic.Int32
	done  chan struct{}
	val   any
	err   error
}

const (
	callQueued int32 = iota
	callSent
	callAbandoned
)

// run executes script through the shared pipelines: concurrent callers
// (submissions, completions, fetches) share round trips. A caller whose
// ctx ends before its call is sent gets ctx's error and the call never
// runs; once sent, run waits for its answer (each round trip is bounded),
// so the caller always learns what happened unless the connection is
// lost. Redis errors come back as domain.ErrUnavailable, or
// domain.ErrStorageFull when Redis refuses writes for lack of memory.
func (b *Broker) run(ctx context.Context, script *op, keys []string, args ...any) (any, error) {
	c := &call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	b.callMu.RLock()
	if b.callsClosed {
		b.callMu.RUnlock()
		return nil, domain.ErrShuttingDown
	}
	select {
	case b.calls <- c:
		b.callMu.RUnlock()
	case <-ctx.Done():
		b.callMu.RUnlock()
		return nil, ctx.Err()
	}
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		if c.state.CompareAndSwap(callQueued, callAbandoned) {
			return nil, ctx.Err()
		}
		<-c.done
		return c.val, c.err
	}
}

// closeCalls stops run from sending and lets the pipelines finish.
func (b *Broker) closeCalls() {
	b.callMu.Lock()
	b.callsClosed = true
	close(b.calls)
	b.callMu.Unlock()
	b.callers.Wait()
}

// pipeline takes a call, gathers whatever else is waiting, and sends them
// all in one round trip.
func (b *Broker) pipeline() {
	defer b.callers.Done()
	batch := make([]*call, 0, pipelineBatch)
	for c := range b.calls {
		batch = append(batch[:0], c)
	gather:
		for len(batch) < pipelineBatch {
			select {
			case more, ok := <-b.calls:
				if !ok {
					break gather
				}
				batch = append(batch, more)
			default:
				break gather
			}
		}
		b.exec(batch)
	}
}

func (b *Broker) exec(batch []*call) {
	live := batch[:0]
	for _, c := range batch {
		if c.state.CompareAndSwap(callQueued, callSent) {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make([]*goredis.Cmd, len(live))
	for i, c := range live {
		cmds[i] = c.script.send(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range live {
		val, err := cmds[i].Result()
		if missing(err) {
			// Redis lost its scripts (a restart): Run loads them again.
			val, err = c.script.Run(ctx, b.rdb, c.keys, c.args...).Result()
		}
		if err != nil {
			err = classify(err)
		}
		c.val, c.err = val, err
		close(c.done)
	}
}
