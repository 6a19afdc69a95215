package redis

import (
	"context"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/taskqueue/taskqueue/domain"
)

// call is one script run waiting for a pipeline.
type call struct {
	ctx    context.Context
	script *goredis.Script
	keys   []string
	args   []any
	done   chan struct{}
	val    any
	err    error
}

// run executes script through the shared pipelines: concurrent callers
// (submissions, completions) share round trips. Redis errors come back as
// domain.ErrUnavailable.
func (b *Broker) run(ctx context.Context, script *goredis.Script, keys []string, args ...any) (any, error) {
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
		return nil, ctx.Err()
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
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make([]*goredis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range batch {
		val, err := cmds[i].Result()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			// Redis lost its script cache (a restart): Run loads it again.
			val, err = c.script.Run(ctx, b.rdb, c.keys, c.args...).Result()
		}
		if err != nil {
			err = unavailable(err)
		}
		c.val, c.err = val, err
		close(c.done)
	}
}
