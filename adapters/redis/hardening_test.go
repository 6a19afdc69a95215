package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/taskqueue/taskqueue/adapters/brokertest"
	"github.com/taskqueue/taskqueue/adapters/redis"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/test/netproxy"
	"github.com/taskqueue/taskqueue/test/redisserver"
)

// viaProxy returns an option that connects a broker to the test Redis
// through p.
func viaProxy(t *testing.T) (*netproxy.Proxy, func(*redis.Options)) {
	u, err := url.Parse(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := netproxy.Start(t, u.Host)
	return p, func(o *redis.Options) {
		o.URL = "redis://" + p.Addr() + u.Path
		o.Lease = 2 * time.Second
		o.MaintainInterval = 100 * time.Millisecond
	}
}

func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func status(t *testing.T, b *redis.Broker, id uuid.UUID) *domain.Task {
	t.Helper()
	got, err := b.Get(ctx5(t), id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return got
}

// A settle that outlives its caller (the link to Redis stalled longer than
// the caller waits, and than the lease) must not strand the task as
// running: the instance stops renewing that lease, and another instance
// recovers the task within the lease plus a few seconds.
func TestSettleCutOffPastTheLeaseLetsAnotherInstanceRecover(t *testing.T) {
	prefix := newPrefix(t)
	proxy, through := viaProxy(t)
	owner := newBroker(t, prefix, through)
	other := newBroker(t, prefix, func(o *redis.Options) { o.Lease = 2 * time.Second; o.MaintainInterval = 100 * time.Millisecond })
	task := brokertest.NewTask(t, 0, 1)
	if err := owner.Enqueue(ctx5(t), task); err != nil {
		t.Fatal(err)
	}
	runningAtt, err := owner.Dequeue(ctx5(t))
	running := runningAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	_ = running.Succeed(time.Now())
	proxy.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := owner.Settle(ctx, 1, running); err == nil {
		t.Fatal("Settle succeeded through a stalled link")
	}
	if n := owner.Held(); n != 0 {
		t.Fatalf("the instance still holds %d attempts after it gave up settling; it would renew the lease forever", n)
	}
	proxy.Resume() // the link heals; the stalled settle may land now, or not
	cut := time.Now()
	eventually(t, "the task to leave running", 8*time.Second, func() bool {
		return status(t, other, task.ID()).Status() != domain.StatusRunning
	})
	got := status(t, other, task.ID())
	switch got.Status() {
	case domain.StatusSucceeded: // the stalled settle arrived first
	case domain.StatusRetrying, domain.StatusPending:
		if !strings.Contains(got.LastError(), "lease expired") {
			t.Fatalf("recovered task: %+v", got.Snapshot())
		}
	default:
		t.Fatalf("task ended %v: %+v", got.Status(), got.Snapshot())
	}
	t.Logf("task %s %v after %v", task.ID(), got.Status(), time.Since(cut).Round(time.Millisecond))
}

// An outage shorter than the lease costs nothing: the outcome is recorded
// when Redis answers again.
func TestSettleDuringShortOutageIsRecordedWhenRedisReturns(t *testing.T) {
	prefix := newPrefix(t)
	proxy, through := viaProxy(t)
	owner := newBroker(t, prefix, func(o *redis.Options) { through(o); o.Lease = 5 * time.Second })
	task := brokertest.NewTask(t, 0, 0)
	_ = owner.Enqueue(ctx5(t), task)
	runningAtt, err := owner.Dequeue(ctx5(t))
	running := runningAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	_ = running.Succeed(time.Now())
	proxy.Cut()
	errc := make(chan error, 1)
	go func() { errc <- owner.Settle(context.Background(), 1, running) }()
	time.Sleep(time.Second) // the length of the outage, not an assertion
	proxy.Resume()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Settle after a 1s outage with a 5s lease: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Settle did not finish after Redis came back")
	}
	if got := status(t, newBroker(t, prefix, nil), task.ID()); got.Status() != domain.StatusSucceeded || got.Attempts() != 1 {
		t.Fatalf("after the outage: %+v", got.Snapshot())
	}
}

// A dequeue whose reply is lost (the script ran after its caller gave up)
// starts an attempt that no worker runs. It is put back as if it never
// started: no retry is used, the attempt count is unchanged.
func TestDequeueWhoseReplyIsLostIsPutBack(t *testing.T) {
	prefix := newPrefix(t)
	proxy, through := viaProxy(t)
	owner := newBroker(t, prefix, func(o *redis.Options) { through(o); o.Lease = 30 * time.Second })
	watcher := newBroker(t, prefix, nil)
	task := brokertest.NewTask(t, 0, 0)
	if err := watcher.Enqueue(ctx5(t), task); err != nil {
		t.Fatal(err)
	}
	proxy.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := owner.Dequeue(ctx) // its fetch is stuck in the stalled link
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dequeue through a stalled link: %v", err)
	}
	time.Sleep(4 * time.Second) // past go-redis's read timeout: the fetch gives up
	proxy.Resume()              // and its script now runs in Redis
	eventually(t, "the task to be put back", 10*time.Second, func() bool {
		got := status(t, watcher, task.ID())
		return got.Status() == domain.StatusPending && got.Attempts() == 0
	})
	againAtt, err := watcher.Dequeue(ctx5(t))
	again := againAtt.Task
	if err != nil || again.ID() != task.ID() || again.Attempts() != 1 || again.RetriesLeft() != 0 || again.LastError() != "" {
		t.Fatalf("after the lost reply: %v %+v", err, again.Snapshot())
	}
}

// The stored record says what is true: while an attempt runs, the task's
// state in Redis says running, with its attempt, lease deadline and
// instance, and a read is one HMGET at any number of running tasks.
func TestStoredStateShowsRunningAttempt(t *testing.T) {
	prefix := newPrefix(t)
	b := newBroker(t, prefix, func(o *redis.Options) { o.Instance = "host-a:42" })
	task := brokertest.NewTask(t, 0, 0)
	_ = b.Enqueue(ctx5(t), task)
	before := time.Now()
	if _, err := b.Dequeue(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	raw, err := rawClient(t).HGet(ctx5(t), "{"+prefix+"}:t:"+task.ID().String(), "s").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"s":"running"`, `"a":1`, `"i":"host-a:42"`, `"l":"`} {
		if !strings.Contains(raw, want) {
			t.Fatalf("stored state %s lacks %s", raw, want)
		}
	}
	if got := status(t, b, task.ID()); got.Status() != domain.StatusRunning || got.Attempts() != 1 || got.StartedAt().Before(before.Add(-time.Second)) {
		t.Fatalf("Get: %+v", got.Snapshot())
	}
}

// Nothing about a finished task stays in Redis once its retention has
// passed: not its record, not its id in the finished index.
func TestExpiredFinishedTaskLeavesNothing(t *testing.T) {
	prefix := newPrefix(t)
	b := newBroker(t, prefix, func(o *redis.Options) {
		o.Retention = 300 * time.Millisecond
		o.MaxFinished = 1000
		o.MaintainInterval = 50 * time.Millisecond
	})
	task := brokertest.NewTask(t, 0, 0)
	_ = b.Enqueue(ctx5(t), task)
	runningAtt, _ := b.Dequeue(ctx5(t))
	running := runningAtt.Task
	_ = running.Succeed(time.Now())
	if err := b.Settle(ctx5(t), 1, running); err != nil {
		t.Fatal(err)
	}
	c := rawClient(t)
	id := task.ID().String()
	eventually(t, "the finished task to be forgotten", 5*time.Second, func() bool {
		left, _ := c.ZCard(ctx5(t), "{"+prefix+"}:finished").Result()
		n, _ := c.Exists(ctx5(t), "{"+prefix+"}:t:"+id, "{"+prefix+"}:idx:succeeded:test").Result()
		return left == 0 && n == 0
	})
	if s, _ := b.Stats(ctx5(t)); s.ByType["test"][domain.StatusSucceeded] != 0 {
		t.Fatalf("stats still count %d succeeded", s.ByType["test"][domain.StatusSucceeded])
	}
}

// A Redis at maxmemory (noeviction) refuses new submissions with a clear
// error, but never takes a lease from a live attempt: renewals and the
// outcome still go through.
func TestFullRedisRefusesSubmissionsButKeepsLeases(t *testing.T) {
	srv := redisserver.Start(t)
	opts := func(o *redis.Options) {
		o.URL = srv.URL
		o.Lease = time.Second
		o.MaintainInterval = 100 * time.Millisecond
	}
	owner := newBroker(t, "full", opts)
	other := newBroker(t, "full", opts)
	task := brokertest.NewTask(t, 0, 0)
	if err := owner.Enqueue(ctx5(t), task); err != nil {
		t.Fatal(err)
	}
	runningAtt, err := owner.Dequeue(ctx5(t))
	running := runningAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	srv.Fill(t)
	err = owner.Enqueue(ctx5(t), brokertest.NewTask(t, 0, 0))
	if !errors.Is(err, domain.ErrStorageFull) || !strings.Contains(err.Error(), "maxmemory") {
		t.Fatalf("Enqueue into a full Redis: %v; want ErrStorageFull naming maxmemory", err)
	}
	// Three lease periods pass: the owner keeps renewing, so nobody
	// recovers the task.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := other.Dequeue(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("another instance took a live attempt from a full Redis: %v %v", got, err)
	}
	if got := status(t, other, task.ID()); got.Status() != domain.StatusRunning || got.Attempts() != 1 {
		t.Fatalf("live attempt in a full Redis: %+v", got.Snapshot())
	}
	_ = running.Succeed(time.Now())
	if err := owner.Settle(ctx5(t), 1, running); err != nil {
		t.Fatalf("Settle into a full Redis: %v", err)
	}
}

// BenchmarkGetWithRunning reads a task while many attempts run: one HMGET,
// so the cost does not grow with the running set (it used to scan it).
func BenchmarkGetWithRunning(b *testing.B) {
	for _, running := range []int{50, 5000} {
		b.Run(fmt.Sprint(running), func(b *testing.B) {
			prefix := newPrefix(b)
			br := newBroker(b, prefix, func(o *redis.Options) { o.QueueSize = running + 1 })
			ctx := context.Background()
			var id uuid.UUID
			for i := 0; i < running; i++ {
				task := brokertest.NewTask(b, 0, 0)
				id = task.ID()
				if err := br.Enqueue(ctx, task); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < running; i++ {
				if _, err := br.Dequeue(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := br.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A queue written in the first key layout (one JSON string per task,
// running attempts as "id|token" members, a finished list) is converted
// at start, so an upgrade keeps every task.
func TestFirstLayoutIsConverted(t *testing.T) {
	prefix := newPrefix(t)
	tag := "{" + prefix + "}:"
	c := rawClient(t)
	ctx := ctx5(t)
	now := time.Now()
	ns := func(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
	record := func(status string, attempts int, extra string) string {
		return `{"t":"resize","p":"{\"w\":64}","pr":3,"mr":1,"s":"` + status + `","a":` + strconv.Itoa(attempts) +
			`,"c":"` + ns(now) + `","u":"` + ns(now) + `"` + extra + `}`
	}
	pending, retrying, running, finished := uuid.New().String(), uuid.New().String(), uuid.New().String(), uuid.New().String()
	c.Set(ctx, tag+"t:"+pending, record("pending", 0, ""), 0)
	c.Set(ctx, tag+"t:"+retrying, record("retrying", 1, `,"e":"boom","n":"`+ns(now.Add(-time.Second))+`"`), 0)
	c.Set(ctx, tag+"t:"+running, record("pending", 0, ""), 0)
	c.Set(ctx, tag+"t:"+finished, record("succeeded", 1, `,"st":"`+ns(now)+`","f":"`+ns(now)+`"`), time.Hour)
	c.ZAdd(ctx, tag+"ready", goredis.Z{Score: 6 * (1 << 48), Member: pending})
	c.ZAdd(ctx, tag+"delayed", goredis.Z{Score: float64(now.Add(-time.Second).UnixMilli()), Member: retrying})
	c.ZAdd(ctx, tag+"running", goredis.Z{Score: float64(now.Add(-time.Second).UnixMilli()), Member: running + "|old-host:7:1:" + ns(now)})
	c.LPush(ctx, tag+"finished", finished)
	c.Set(ctx, tag+"seq", 3, 0)

	b := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	if v, _ := c.Get(ctx, tag+"schema").Result(); v != "3" {
		t.Fatalf("schema after conversion: %q", v)
	}
	for _, id := range []string{pending, retrying, running, finished} {
		if typ, _ := c.Type(ctx, tag+"t:"+id).Result(); typ != "hash" {
			t.Fatalf("record %s is a %s after conversion", id, typ)
		}
	}
	if ttl, _ := c.PTTL(ctx, tag+"t:"+finished).Result(); ttl < 50*time.Minute {
		t.Fatalf("finished task lost its TTL: %v", ttl)
	}
	if typ, _ := c.Type(ctx, tag+"finished").Result(); typ != "zset" {
		t.Fatalf("finished index is a %s", typ)
	}
	get := func(id string) *domain.Task { return status(t, b, uuid.MustParse(id)) }
	if got := get(finished); got.Status() != domain.StatusSucceeded || got.Attempts() != 1 || string(got.Payload()) != `{"w":64}` {
		t.Fatalf("finished task: %+v", got.Snapshot())
	}
	if got := get(pending); got.Status() != domain.StatusPending || got.RetriesLeft() != 1 {
		t.Fatalf("pending task: %+v", got.Snapshot())
	}
	// The attempt an older instance was running is recovered when its
	// lease runs out, as a failed attempt; the others run.
	seen := map[string]*domain.Task{}
	for len(seen) < 3 {
		taskAtt, err := b.Dequeue(ctx5(t))
		task := taskAtt.Task
		if err != nil {
			t.Fatalf("dequeue after conversion (got %v): %v", seen, err)
		}
		seen[task.ID().String()] = task
	}
	if got := seen[running]; got == nil || got.Attempts() != 2 || !strings.Contains(got.LastError(), "lease expired") {
		t.Fatalf("the older instance's attempt: %+v", got)
	}
	if got := seen[retrying]; got == nil || got.Attempts() != 2 || got.RetriesLeft() != 0 {
		t.Fatalf("retrying task: %+v", got)
	}
}

// BenchmarkListAt1M reads one page of 50 tasks with a million stored; see
// brokertest.BenchmarkListAt1M.
func BenchmarkListAt1M(b *testing.B) {
	brokertest.BenchmarkListAt1M(b, newBroker(b, newPrefix(b), func(o *redis.Options) { o.QueueSize = 1_000_001 }))
}

// A queue written in the second key layout (one ready set scored by
// priority band and sequence number) is converted at start into the
// per-type ready structure, keeping the order.
func TestSecondLayoutIsConverted(t *testing.T) {
	prefix := newPrefix(t)
	tag := "{" + prefix + "}:"
	c := rawClient(t)
	ctx := ctx5(t)
	ns := strconv.FormatInt(time.Now().UnixNano(), 10)
	ids := []string{uuid.New().String(), uuid.New().String(), uuid.New().String()}
	priorities := []int{3, 7, 3}
	seqs := []int{5, 6, 2}
	for i, id := range ids {
		p := strconv.Itoa(priorities[i])
		c.HSet(ctx, tag+"t:"+id, "d", `{"t":"resize","mr":1,"c":"`+ns+`","p":{}}`, "s", `{"ty":"resize","pr":`+p+`,"s":"pending","a":0,"u":"`+ns+`"}`)
		c.ZAdd(ctx, tag+"ready", goredis.Z{Score: float64((9-priorities[i])*(1<<48) + seqs[i]), Member: id})
		c.ZAdd(ctx, tag+"idx:pending:resize", goredis.Z{Member: id})
	}
	c.HSet(ctx, tag+"counts", "pending|resize", 3)
	c.Set(ctx, tag+"seq", 6, 0)
	c.Set(ctx, tag+"schema", "2", 0)

	b := newBroker(t, prefix, nil)
	if v, _ := c.Get(ctx, tag+"schema").Result(); v != "3" {
		t.Fatalf("schema after conversion: %q", v)
	}
	if n, _ := c.Exists(ctx, tag+"ready").Result(); n != 0 {
		t.Fatal("the old ready set is still there")
	}
	if counts, err := b.Counts(ctx); err != nil || counts.Pending != 3 {
		t.Fatalf("counts after conversion: %+v, %v", counts, err)
	}
	for _, want := range []string{ids[1], ids[2], ids[0]} {
		att, err := b.Dequeue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if att.Task.ID().String() != want {
			t.Fatalf("got %s (priority %d); want %s", att.Task.ID(), att.Task.Priority().Level(), want)
		}
	}
}

// BenchmarkFlowDrain drains b.N stored tasks with 50 workers, for each
// shape of types and keys; see brokertest.BenchmarkDrain. Give it a fixed
// count (-benchtime 20000x): each round stores b.N tasks first.
func BenchmarkFlowDrain(b *testing.B) {
	for _, shape := range brokertest.Shapes {
		b.Run(shape.String(), func(b *testing.B) {
			cfg := shape.Config(b.N + 1)
			broker := newBroker(b, newPrefix(b), func(o *redis.Options) { o.QueueSize, o.Retention, o.Types = cfg.QueueSize, 0, cfg.Types })
			brokertest.BenchmarkDrain(b, broker, shape, 50)
		})
	}
}

// BenchmarkFlowSubmitToStart measures the wait from Enqueue to the start
// of the attempt with 10 idle workers; see brokertest.BenchmarkSubmitToStart.
func BenchmarkFlowSubmitToStart(b *testing.B) {
	for _, shape := range brokertest.Shapes {
		b.Run(shape.String(), func(b *testing.B) {
			cfg := shape.Config(1000)
			broker := newBroker(b, newPrefix(b), func(o *redis.Options) { o.QueueSize, o.Retention, o.Types = cfg.QueueSize, 0, cfg.Types })
			brokertest.BenchmarkSubmitToStart(b, broker, shape, 10)
		})
	}
}
