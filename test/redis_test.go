package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/taskqueue/taskqueue/test/redisserver"
)

func redisURL(t *testing.T) string { return redisserver.URL(t) }

// redisArgs returns the flags for an instance on a fresh queue of url,
// whose keys are deleted when t ends.
func redisArgs(t *testing.T, url string) []string {
	prefix := fmt.Sprintf("bb-%s-%08x", t.Name(), rand.Uint32())
	redisserver.DeleteAfter(t, url, prefix)
	return []string{"--broker", "redis", "--redis-url", url, "--redis-prefix", prefix}
}

func startN(t *testing.T, n int, args ...string) []*server {
	var out []*server
	for i := 0; i < n; i++ {
		out = append(out, start(t, args...))
	}
	return out
}

func TestRedisThreeInstancesRunEachTaskOnce(t *testing.T) {
	threeInstancesRunEachTaskOnce(t, redisArgs(t, redisURL(t)))
}

// threeInstancesRunEachTaskOnce: three instances on the broker of base
// run 2000 tasks submitted to all three, each exactly once.
func threeInstancesRunEachTaskOnce(t *testing.T, base []string) {
	hook := newReceiver(t, 200, false)
	args := append(base, "--workers", "5", "--handler", "job="+hook.URL)
	servers := startN(t, 3, args...)
	const total = 2000
	ids := make([]string, total)
	var wg sync.WaitGroup
	for p := 0; p < 8; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := p; i < total; i += 8 {
				ids[i] = servers[i%3].submit("job", i%10, 0)
			}
		}(p)
	}
	wg.Wait()
	eventually(t, "every task to reach the webhook", func() bool { return hook.count() >= total })
	for i, id := range ids {
		servers[(i+1)%3].waitStatus(id, "succeeded") // read on another instance
	}
	calls, _, _ := hook.snapshot()
	seen := map[string]int{}
	for _, c := range calls {
		seen[c.ID]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("task %s ran %d times; want exactly once", id, seen[id])
		}
	}
	if len(calls) != total {
		t.Fatalf("%d webhook calls for %d tasks", len(calls), total)
	}
}

func TestRedisGlobalPriorityAcrossInstances(t *testing.T) {
	globalPriorityAcrossInstances(t, redisArgs(t, redisURL(t)))
}

// globalPriorityAcrossInstances: tasks submitted to three instances start
// in one priority order.
func globalPriorityAcrossInstances(t *testing.T, base []string) {
	hook := newGatedReceiver(t)
	args := append(base, "--workers", "1", "--handler", "job="+hook.URL)
	servers := startN(t, 3, args...)
	for i := 0; i < 3; i++ { // occupy every worker
		servers[i].submit("job", 0, 0)
	}
	eventually(t, "all three workers busy", func() bool { _, n, _ := hook.snapshot(); return n == 3 })
	priorities := []int{1, 5, 9, 3, 7, 2, 8, 4, 6}
	for i, p := range priorities {
		servers[i%3].submit("job", p, 0)
	}
	var got []int
	for i := range priorities {
		hook.gate <- struct{}{} // free one worker; it takes the next task
		eventually(t, "the next task to start", func() bool { return hook.count() == 4+i })
		calls, _, _ := hook.snapshot()
		got = append(got, calls[3+i].Payload["p"])
	}
	if fmt.Sprint(got) != "[9 8 7 6 5 4 3 2 1]" {
		t.Fatalf("tasks submitted to three instances started in order %v", got)
	}
	for i := 0; i < 12; i++ {
		hook.gate <- struct{}{}
	}
}

func TestRedisKilledInstanceTaskIsRecovered(t *testing.T) {
	killedInstanceTaskIsRecovered(t, redisArgs(t, redisURL(t)))
}

// killedInstanceTaskIsRecovered: the task of an instance killed with
// SIGKILL runs again on another within the lease and a few seconds, its
// record showing the lost attempt.
func killedInstanceTaskIsRecovered(t *testing.T, base []string) {
	hook := newReceiver(t, 200, true)
	args := append(base, "--workers", "1", "--lease", "1s", "--handler", "job="+hook.URL)
	victim := start(t, args...)
	id := victim.submit("job", 0, 2)
	eventually(t, "the victim to start the task", func() bool { return hook.count() == 1 })
	survivor := start(t, args...)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, "another instance to run the task again", func() bool { return hook.count() == 2 })
	if took := time.Since(killed); took > 5*time.Second {
		t.Errorf("recovery took %v; want the 1s lease plus a few seconds", took)
	}
	hook.releaseAll()
	task := survivor.waitStatus(id, "succeeded")
	if task["attempts"] != 2.0 || !strings.Contains(task["last_error"].(string), "lease expired") {
		t.Fatalf("record does not show the lost attempt: %v", task)
	}
	calls, _, _ := hook.snapshot()
	if calls[1].ID != id || calls[1].Attempt != 2 {
		t.Fatalf("second call: %+v", calls[1])
	}
}

func TestRedisStopAllAndRestartLosesNothing(t *testing.T) {
	stopAllAndRestartLosesNothing(t, redisArgs(t, redisURL(t)), "tasks stay in Redis")
}

// stopAllAndRestartLosesNothing: every instance stops (handing back what
// runs, logging stayed), new ones start, and every task runs.
func stopAllAndRestartLosesNothing(t *testing.T, base []string, stayed string) {
	hold := newReceiver(t, 200, true)
	args := append(base, "--workers", "1", "--shutdown-timeout", "200ms")
	first := startN(t, 3, append(args, "--handler", "job="+hold.URL)...)
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, first[i%3].submit("job", i%10, 0))
	}
	eventually(t, "three attempts in flight", func() bool { _, n, _ := hold.snapshot(); return n == 3 })
	for _, s := range first {
		s.signal()
	}
	for _, s := range first {
		if err := s.wait(); err != nil {
			t.Fatalf("exit: %v", err)
		}
	}
	for _, s := range first {
		if l := s.findLog(stayed); l == nil {
			t.Fatalf("shutdown did not report %q:\n%s", stayed, s.logText())
		}
	}
	held, _, _ := hold.snapshot()
	handedBack := map[string]bool{}
	for _, c := range held {
		handedBack[c.ID] = true
	}
	ok := newReceiver(t, 200, false)
	second := startN(t, 3, append(args, "--handler", "job="+ok.URL)...)
	for i, id := range ids {
		task := second[i%3].waitStatus(id, "succeeded")
		// A handed-back attempt keeps its number (attempts never go down)
		// and does not use up a retry.
		want := 1.0
		if handedBack[id] {
			want = 2
		}
		if task["attempts"] != want || task["retries_left"] != 0.0 {
			t.Fatalf("task %s: %v; want %v attempts and no retry used", id, task, want)
		}
	}
	calls, _, _ := ok.snapshot()
	if len(calls) != 20 {
		t.Fatalf("after restart %d tasks ran; want all 20", len(calls))
	}
	for _, c := range calls {
		if handedBack[c.ID] && c.Attempt != 2 {
			t.Fatalf("the rerun of handed-back task %s was sent as attempt %d; want 2", c.ID, c.Attempt)
		}
	}
}

func TestRedisRestartUnderLoad(t *testing.T) {
	srv := redisserver.Start(t)
	restartUnderLoad(t, redisArgs(t, srv.URL), srv.Kill, srv.Restart, "taking tasks from Redis again")
}

// load has servers take no-op submissions in a loop, paced, until
// finish: 202s are recorded as accepted, 503s counted (with check503,
// each must carry Retry-After: 1 and say the broker is unavailable), and
// any other answer fails the test.
type load struct {
	mu       sync.Mutex
	accepted []string
	refused  int
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, servers []*server, check503 bool) *load {
	l := &load{stop: make(chan struct{})}
	for _, s := range servers {
		l.wg.Add(1)
		go func(s *server) {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				r := s.request("POST", "/task", `{"type":"noop"}`)
				l.mu.Lock()
				switch r.status {
				case 202:
					l.accepted = append(l.accepted, r.body["id"].(string))
				case 503:
					l.refused++
					if check503 && (r.header.Get("Retry-After") != "1" || !strings.Contains(r.body["error"].(string), "unavailable")) {
						t.Errorf("503 during outage: %v %v", r.header, r.body)
					}
				default:
					t.Errorf("status %d during outage: %v", r.status, r.body)
				}
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond) // pacing the load, not an assertion
			}
		}(s)
	}
	return l
}

// counts returns how many submissions were accepted and refused so far.
func (l *load) counts() (accepted, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted), l.refused
}

// finish stops the load and returns the ids accepted.
func (l *load) finish() []string {
	close(l.stop)
	l.wg.Wait()
	return l.accepted
}

// waitSucceeded waits for every task of ids to succeed, reading task i
// on servers[i%len(servers)].
func waitSucceeded(t *testing.T, servers []*server, ids []string) {
	for i, id := range ids {
		s := servers[i%len(servers)]
		eventually(t, "task "+id+" to succeed", func() bool {
			r := s.request("GET", "/task/"+id, "")
			// Right after a restart a pooled connection can still be a
			// dead one: that is a clean 503, and the next call is fine.
			return r.status == 200 && r.body["status"] == "succeeded"
		})
	}
}

// restartUnderLoad: two instances take submissions while the broker is
// killed and restarted; during the outage they answer 503 with
// Retry-After, /healthz stays 200, and every accepted task succeeds.
func restartUnderLoad(t *testing.T, base []string, kill, restart func(), again string) {
	// A dequeue whose reply is lost when the broker dies leaves its task
	// running under a lease nobody renews; a short lease lets recovery run
	// in time.
	args := append(base, "--workers", "4", "--lease", "2s")
	servers := startN(t, 2, args...)
	load := startLoad(t, servers, true)
	eventually(t, "load before the outage", func() bool { n, _ := load.counts(); return n >= 100 })
	kill()
	eventually(t, "submissions refused while the broker is down", func() bool { _, r := load.counts(); return r >= 20 })
	if r := servers[0].request("GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("/healthz while the broker is down: %d", r.status)
	}
	if r := servers[0].request("GET", "/readyz", ""); r.status != 503 {
		t.Fatalf("/readyz while the broker is down: %d; want 503", r.status)
	}
	before, _ := load.counts()
	restart()
	eventually(t, "submissions accepted again", func() bool { n, _ := load.counts(); return n >= before+100 })
	waitSucceeded(t, servers, load.finish())
	resumed := 0
	for _, s := range servers {
		if s.findLog(again) != nil {
			resumed++
		}
	}
	if resumed == 0 {
		t.Fatalf("no instance logged %q after the broker came back", again)
	}
}

// A Redis outage shorter than --lease costs no attempt: results ready
// during the outage are recorded when Redis returns, attempts started by
// a dequeue whose reply was lost are put back, and no task runs twice or
// fails. (Redis keeps every acknowledged write: appendfsync always.)
func TestRedisShortOutageCostsNoAttempt(t *testing.T) {
	srv := redisserver.Start(t)
	var mu sync.Mutex
	calls := map[string]int{}
	hook := newReceiver(t, 200, false)
	hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c call
		_ = json.NewDecoder(r.Body).Decode(&c)
		mu.Lock()
		calls[c.ID]++
		mu.Unlock()
		d := 30 * time.Millisecond
		if c.Payload["p"]%2 == 1 {
			d = 1500 * time.Millisecond
		}
		select {
		case <-time.After(d): // the task's work
		case <-r.Context().Done():
		}
	})
	args := append(redisArgs(t, srv.URL), "--workers", "4", "--lease", "3s", "--handler", "job="+hook.URL)
	servers := startN(t, 2, args...)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, servers[i%2].submit("job", i%2, 1))
	}
	eventually(t, "attempts in flight", func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) >= 8 })
	srv.Kill()
	time.Sleep(300 * time.Millisecond) // the outage; not an assertion
	srv.Restart()
	for i, id := range ids {
		task := servers[i%2].waitStatus(id, "succeeded")
		if task["attempts"] != 1.0 || task["retries_left"] != 1.0 {
			t.Errorf("task %s after a 0.3s outage with a 3s lease: %v; want one attempt, no retry used", id, task)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if calls[id] != 1 {
			t.Errorf("task %s reached the webhook %d times; want once", id, calls[id])
		}
	}
}
