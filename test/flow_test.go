package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// An instance takes only the types it runs: a task of a type that only
// another instance runs is run there; an API-only instance (--workers 0)
// and --accept-type take submissions of types they do not run; a task of
// a type no running instance serves waits, counted in /stats; a type the
// instance neither runs nor accepts is still refused.
func TestInstancesTakeOnlyTypesTheyRun(t *testing.T) {
	hookA, hookB := newReceiver(t, 200, false), newReceiver(t, 200, false)
	base := redisArgs(t, redisURL(t))
	api := start(t, append(base, "--workers", "0", "--handler", "a="+hookA.URL, "--accept-type", "b", "--accept-type", "later")...)
	runsA := start(t, append(base, "--workers", "2", "--handler", "a="+hookA.URL)...)
	if l := api.findLog("API-only instance"); l == nil || l["level"] != "warning" {
		t.Fatalf("no warning that the instance runs nothing: %v", l)
	}
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, api.submit("a", 0, 0), api.submit("b", 0, 0))
	}
	later := api.submit("later", 0, 0)
	if r := api.request("POST", "/task", `{"type":"c"}`); r.status != 400 || !strings.Contains(r.body["error"].(string), "not a type this instance runs or accepts") {
		t.Fatalf("a type neither run nor accepted: %d %v", r.status, r.body)
	}
	eventually(t, "the tasks of type a to run", func() bool { return hookA.count() == 10 })
	// Type b waits for an instance that runs it; runsA never takes it.
	st := api.request("GET", "/stats", "")
	if pending := st.body["types"].(map[string]any)["b"].(map[string]any)["pending"]; pending != 10.0 {
		t.Fatalf("waiting tasks of type b: %v", st.body)
	}
	runsB := start(t, append(base, "--workers", "2", "--handler", "b="+hookB.URL)...)
	eventually(t, "the tasks of type b to run once an instance runs b", func() bool { return hookB.count() == 10 })
	for _, id := range ids {
		api.waitStatus(id, "succeeded")
	}
	if got := runsA.task(later)["status"]; got != "pending" {
		t.Fatalf("a task of a type nobody runs is %v", got)
	}
	for _, s := range []*server{runsA, runsB} {
		if l := s.findLog("no handler for type"); l != nil {
			t.Fatalf("an instance took a task it has no handler for: %v", l)
		}
	}
	types := api.request("GET", "/types", "")
	if types.status != 200 {
		t.Fatalf("GET /types: %d %v", types.status, types.body)
	}
	byName := map[string]map[string]any{}
	for _, ty := range types.body["types"].([]any) {
		m := ty.(map[string]any)
		byName[m["name"].(string)] = m
	}
	if byName["later"]["counts"].(map[string]any)["pending"] != 1.0 || byName["a"]["runs_here"] != false || byName["b"]["counts"].(map[string]any)["succeeded"] != 10.0 {
		t.Fatalf("GET /types: %v", types.body)
	}
}

// peakHook is a webhook receiver that counts the calls running at once,
// per task key when the payload carries one.
type peakHook struct {
	*httptest.Server
	mu       sync.Mutex
	running  map[string]int
	peak     map[string]int
	starts   []time.Time
	hold     time.Duration
	finished int
}

func newPeakHook(t *testing.T, hold time.Duration) *peakHook {
	h := &peakHook{running: map[string]int{}, peak: map[string]int{}, hold: hold}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Payload struct{ K string }
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		k := body.Payload.K
		h.mu.Lock()
		h.starts = append(h.starts, time.Now())
		h.running[k]++
		h.running["*"]++
		h.peak[k] = max(h.peak[k], h.running[k])
		h.peak["*"] = max(h.peak["*"], h.running["*"])
		h.mu.Unlock()
		time.Sleep(h.hold) // the handler's work
		h.mu.Lock()
		h.running[k]--
		h.running["*"]--
		h.finished++
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *peakHook) stats() (finished int, peak map[string]int, starts []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := map[string]int{}
	for k, v := range h.peak {
		p[k] = v
	}
	return h.finished, p, append([]time.Time(nil), h.starts...)
}

func submitKeyed(t *testing.T, s *server, typ, key string, n int) {
	t.Helper()
	elems := make([]string, n)
	for i := range elems {
		if key == "" {
			elems[i] = fmt.Sprintf(`{"type":%q}`, typ)
		} else {
			elems[i] = fmt.Sprintf(`{"type":%q,"key":%q,"payload":{"k":%q}}`, typ, key, key)
		}
	}
	if r := s.request("POST", "/tasks", `{"tasks":[`+strings.Join(elems, ",")+`]}`); r.status != 202 {
		t.Fatalf("submit: %d %v", r.status, r.body)
	}
}

// Concurrency limits are global: three instances with four workers each
// never run more than the type's limit at once, nor more than the key
// limit per key, and a type waiting for its limit does not hold back
// another type.
func TestConcurrencyLimitsAcrossInstances(t *testing.T) {
	limited, keyed, free := newPeakHook(t, 30*time.Millisecond), newPeakHook(t, 30*time.Millisecond), newPeakHook(t, 0)
	args := append(redisArgs(t, redisURL(t)), "--workers", "4", "--handler", "limited="+limited.URL, "--handler", "keyed="+keyed.URL,
		"--handler", "free="+free.URL, "--type-limit", "limited=concurrency:3", "--key-limit", "concurrency:1")
	servers := startN(t, 3, args...)
	submitKeyed(t, servers[0], "limited", "", 60)
	submitKeyed(t, servers[1], "keyed", "acme", 10)
	submitKeyed(t, servers[1], "keyed", "globex", 10)
	submitKeyed(t, servers[2], "free", "", 20)
	// The other type runs while the limited one waits for its slots.
	eventually(t, "the unlimited type to run", func() bool { n, _, _ := free.stats(); return n == 20 })
	if n, _, _ := limited.stats(); n >= 60 {
		t.Fatal("the limited type finished before the other type: the test shows nothing")
	}
	eventually(t, "every limited task to run", func() bool { n, _, _ := limited.stats(); return n == 60 })
	eventually(t, "every keyed task to run", func() bool { n, _, _ := keyed.stats(); return n == 20 })
	if _, peak, _ := limited.stats(); peak["*"] != 3 {
		t.Fatalf("at most %d attempts of a type limited to 3 ran at once across 3 instances of 4 workers; want 3", peak["*"])
	}
	if _, peak, _ := keyed.stats(); peak["acme"] != 1 || peak["globex"] != 1 || peak["*"] != 2 {
		t.Fatalf("per key peaks %v; want 1 per key, 2 in all", peak)
	}
}

// A rate limit holds across instances: R attempts per period after a
// burst of R, within 10% over ten seconds.
func TestRateLimitHoldsOverTenSeconds(t *testing.T) {
	const rate = 20
	hook := newPeakHook(t, 0)
	args := append(redisArgs(t, redisURL(t)), "--workers", "4", "--handler", "job="+hook.URL, "--type-limit", fmt.Sprintf("job=rate:%d/1s", rate))
	servers := startN(t, 3, args...)
	submitKeyed(t, servers[0], "job", "", 300)
	var starts []time.Time
	eventually(t, "ten seconds of starts", func() bool {
		_, _, starts = hook.stats()
		return len(starts) > 0 && time.Since(starts[0]) > 10*time.Second+200*time.Millisecond
	})
	in := 0
	for _, at := range starts {
		if at.Sub(starts[0]) < 10*time.Second {
			in++
		}
	}
	// A bucket holding 20 starts full: 20 at once, then 20 a second.
	want := rate + 10*rate
	if in < want*9/10 || in > want*11/10 {
		t.Fatalf("%d attempts started in 10s at %d/s (burst %d); want %d ± 10%%", in, rate, rate, want)
	}
	t.Logf("%d attempts started in 10 s; the limit allows %d", in, want)
}

// A key with 200 queued tasks does not hold back another key's one task.
func TestFloodingKeyDoesNotStarveAnother(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		hook := newGatedReceiver(t)
		s := start(t, append(extra, "--workers", "1", "--handler", "job="+hook.URL)...)
		submitKeyed(t, s, "job", "flood", 200)
		eventually(t, "the first task to start", func() bool { return hook.count() == 1 })
		r := s.request("POST", "/task", `{"type":"job","key":"single","payload":{"p":1}}`)
		if r.status != 202 {
			t.Fatalf("submit: %d %v", r.status, r.body)
		}
		single := r.body["id"].(string)
		for i := 0; i < 3; i++ {
			hook.gate <- struct{}{}
			eventually(t, "the next task", func() bool { return hook.count() == 2+i })
			calls, _, _ := hook.snapshot()
			if calls[len(calls)-1].ID == single {
				for j := 0; j < 300; j++ {
					hook.gate <- struct{}{}
				}
				return
			}
		}
		t.Fatal("the single key's task did not start among the next three")
	})
}

// Pausing a type on one instance stops starts on every instance within a
// second; resuming restarts them; submissions go on meanwhile.
func TestPauseAndResumeAcrossInstances(t *testing.T) {
	hook := newPeakHook(t, 0)
	args := append(redisArgs(t, redisURL(t)), "--workers", "2", "--handler", "job="+hook.URL)
	a, b := start(t, args...), start(t, args...)
	if r := a.request("POST", "/types/job/pause", ""); r.status != 200 || r.body["paused"] != true {
		t.Fatalf("pause: %d %v", r.status, r.body)
	}
	paused := time.Now()
	submitKeyed(t, b, "job", "", 10)
	if r := b.request("POST", "/types/nope/pause", ""); r.status != 400 {
		t.Fatalf("pause of an unknown type: %d %v", r.status, r.body)
	}
	for time.Since(paused) < 1500*time.Millisecond { // a window for a wrong start to show
		if n, _, _ := hook.stats(); n > 0 {
			t.Fatalf("%d attempts of a paused type started", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	types := b.request("GET", "/types", "")
	if !strings.Contains(fmt.Sprint(types.body), "paused:true") {
		t.Fatalf("GET /types does not show the pause: %v", types.body)
	}
	resumed := time.Now()
	if r := b.request("POST", "/types/job/resume", ""); r.status != 200 || r.body["paused"] != false {
		t.Fatalf("resume: %d %v", r.status, r.body)
	}
	eventually(t, "attempts to start after resume", func() bool { n, _, _ := hook.stats(); return n > 0 })
	if took := time.Since(resumed); took > time.Second {
		t.Fatalf("the first attempt started %v after resume; want within 1s", took)
	}
	eventually(t, "every task to run", func() bool { n, _, _ := hook.stats(); return n == 10 })
}

// A webhook pushes back: 429 with Retry-After delays the next attempt,
// X-Task-No-Retry ends the task with its retries unused.
func TestWebhookBackpressure(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		var mu sync.Mutex
		var calls []time.Time
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			calls = append(calls, time.Now())
			n := len(calls)
			mu.Unlock()
			if strings.Contains(r.URL.Path, "never") {
				w.Header().Set("X-Task-No-Retry", "true")
				w.WriteHeader(422)
				return
			}
			if n == 1 {
				w.Header().Set("Retry-After", "2")
				w.WriteHeader(429)
			}
		}))
		t.Cleanup(hook.Close)
		s := start(t, append(extra, "--handler", "later="+hook.URL+"/later", "--handler", "never="+hook.URL+"/never",
			"--retry-initial-backoff", "50ms", "--retry-max-backoff", "10s")...)
		id := s.submit("later", 0, 3)
		s.waitStatus(id, "succeeded")
		mu.Lock()
		if len(calls) != 2 || calls[1].Sub(calls[0]) < 2*time.Second {
			t.Fatalf("calls %v: want the second at least 2s after the first (Retry-After: 2)", calls)
		}
		mu.Unlock()
		id = s.submit("never", 0, 5)
		task := s.waitStatus(id, "failed")
		if task["attempts"] != 1.0 || task["retries_left"] != 0.0 || !strings.Contains(task["last_error"].(string), "asked not to retry") {
			t.Fatalf("after X-Task-No-Retry: %v", task)
		}
	})
}
