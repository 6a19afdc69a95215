package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/test/redisserver"
)

// The dequeue script carries out three domain rules inside Redis, where
// they must be atomic: the token bucket (domain.TypeLimits.Take), priority
// aging (domain.EffectiveLevel) and the order (domain.Candidate.Outranks).
// These tests hold the Lua to the same answers as the Go.
func TestScriptsFollowTheDomain(t *testing.T) {
	url := redisserver.URL(t)
	prefix := fmt.Sprintf("tqtest-domain-%08x", rand.Uint32())
	redisserver.DeleteAfter(t, url, prefix)
	opts, _ := goredis.ParseURL(url)
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	k := newKeys(prefix)
	ctx := context.Background()

	t.Run("TokenBucket", func(t *testing.T) {
		take := goredis.NewScript(prelude + flowLib + `
local ok, wait = take(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), true)
return {ok and 1 or 0, wait}`)
		for _, tc := range []struct {
			rate   int
			period time.Duration
		}{{10, time.Second}, {3, time.Minute}, {100, 250 * time.Millisecond}, {1, time.Second}} {
			limits, err := domain.NewTypeLimits(0, tc.rate, tc.period)
			if err != nil {
				t.Fatal(err)
			}
			typ := fmt.Sprintf("t%d-%s", tc.rate, tc.period)
			r := rand.New(rand.NewPCG(1, uint64(tc.rate)))
			now := time.UnixMilli(1_700_000_000_000)
			var bucket domain.TokenBucket
			for i := 0; i < 300; i++ {
				now = now.Add(time.Duration(r.IntN(int(tc.period.Milliseconds())/tc.rate*2+1)) * time.Millisecond)
				var ok bool
				var wait time.Duration
				bucket, ok, wait = limits.Take(bucket, now)
				res, err := take.Run(ctx, rdb, k.all(), k.tag, typ, tc.rate, tc.period.Milliseconds(), now.UnixMilli()).Int64Slice()
				if err != nil {
					t.Fatal(err)
				}
				if (res[0] == 1) != ok {
					t.Fatalf("%s, step %d: Lua took a token: %v; the domain: %v", typ, i, res[0] == 1, ok)
				}
				// Lua counts whole milliseconds, rounding up, in floating point.
				if got := time.Duration(res[1]) * time.Millisecond; !ok && (got < wait-time.Microsecond || got > wait+2*time.Millisecond) {
					t.Fatalf("%s, step %d: Lua waits %d ms; the domain %v", typ, i, res[1], wait)
				}
			}
		}
	})

	t.Run("Aging", func(t *testing.T) {
		effective := goredis.NewScript(prelude + flowLib + `return effective(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))`)
		for _, step := range []time.Duration{0, time.Millisecond, 50 * time.Millisecond, time.Minute} {
			for level := 0; level <= 9; level++ {
				for _, waited := range []time.Duration{0, step - time.Millisecond, step, 2*step + 1, 9 * step, 100 * step, time.Hour} {
					if waited < 0 {
						continue
					}
					got, err := effective.Run(ctx, rdb, k.all(), k.tag, level, waited.Milliseconds(), step.Milliseconds()).Int()
					if err != nil {
						t.Fatal(err)
					}
					if want := domain.EffectiveLevel(level, waited, step); got != want {
						t.Fatalf("level %d, waited %v, step %v: Lua %d, domain %d", level, waited, step, got, want)
					}
				}
			}
		}
	})

	t.Run("Order", func(t *testing.T) {
		outranks := goredis.NewScript(prelude + flowLib + `
return outranks({eff = tonumber(ARGV[2]), seq = tonumber(ARGV[3])}, {eff = tonumber(ARGV[4]), seq = tonumber(ARGV[5])}) and 1 or 0`)
		now := time.Now()
		for _, tc := range [][4]int{{9, 5, 8, 1}, {3, 1, 3, 2}, {3, 2, 3, 1}, {0, 1, 9, 2}} {
			c := domain.Candidate{Level: tc[0], Seq: uint64(tc[1]), PendingSince: now}
			o := domain.Candidate{Level: tc[2], Seq: uint64(tc[3]), PendingSince: now}
			got, err := outranks.Run(ctx, rdb, k.all(), k.tag, tc[0], tc[1], tc[2], tc[3]).Int()
			if err != nil {
				t.Fatal(err)
			}
			if want := c.Outranks(o, now, 0); (got == 1) != want {
				t.Fatalf("%v: Lua %v, domain %v", tc, got == 1, want)
			}
		}
	})
}
