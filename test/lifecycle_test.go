package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// both runs fn against an instance on the memory broker and one on Redis.
func both(t *testing.T, fn func(t *testing.T, extra ...string)) {
	t.Run("memory", func(t *testing.T) { fn(t) })
	t.Run("redis", func(t *testing.T) { fn(t, redisArgs(t, redisURL(t))...) })
}

// A cancel reaches a running webhook attempt: its HTTP request is aborted
// within a second, the task ends cancelled, and it never runs again.
func TestCancelAbortsRunningWebhook(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		arrived := make(chan struct{}, 1)
		aborted := make(chan time.Time, 1)
		hook := newReceiver(t, 200, false)
		hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client going away
			arrived <- struct{}{}
			<-r.Context().Done()
			aborted <- time.Now()
		})
		s := start(t, append(extra, "--handler", "slow="+hook.URL, "--task-timeout", "1m")...)
		id := s.submit("slow", 0, 3)
		<-arrived
		cancelled := time.Now()
		r := s.request("POST", "/task/"+id+"/cancel", "")
		if r.status != 200 || r.body["status"] != "cancelled" {
			t.Fatalf("cancel: %d %v", r.status, r.body)
		}
		select {
		case at := <-aborted:
			if took := at.Sub(cancelled); took > time.Second {
				t.Errorf("the webhook request was aborted %v after the cancel; want within 1s", took)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the running webhook request was never aborted")
		}
		eventually(t, "the attempt's end to be logged", func() bool { return s.findLog("the task was cancelled") != nil })
		task := s.task(id)
		if task["status"] != "cancelled" || !strings.Contains(task["last_error"].(string), "cancelled while attempt 1 was running") {
			t.Fatalf("task after cancel: %v", task)
		}
		if r := s.request("POST", "/task/"+id+"/cancel", ""); r.status != 409 || !strings.Contains(r.body["error"].(string), "cancelled") {
			t.Fatalf("second cancel: %d %v", r.status, r.body)
		}
		// Dead letters go back to work by hand, with a fresh budget.
		r = s.request("POST", "/task/"+id+"/retry", "")
		if r.status != 200 || r.body["status"] != "pending" && r.body["status"] != "running" || r.body["retries_left"] != 3.0 {
			t.Fatalf("retry: %d %v", r.status, r.body)
		}
		<-arrived
	})
}

// The same Idempotency-Key sent to two instances at the same moment
// creates one task; both answers carry it (or the second is told the
// first is still being processed); a later repeat is replayed.
func TestIdempotencyKeyAcrossInstances(t *testing.T) {
	hook := newReceiver(t, 200, false)
	args := append(redisArgs(t, redisURL(t)), "--handler", "job="+hook.URL)
	servers := startN(t, 2, args...)
	for round := 0; round < 20; round++ {
		key := fmt.Sprintf("key-%d-%d", round, time.Now().UnixNano())
		var wg sync.WaitGroup
		answers := make([]response, 2)
		for i, s := range servers {
			wg.Add(1)
			go func(i int, s *server) {
				defer wg.Done()
				answers[i] = s.requestWith("POST", "/task", `{"type":"job","payload":{"n":1}}`, map[string]string{"Idempotency-Key": key})
			}(i, s)
		}
		wg.Wait()
		ids := map[string]bool{}
		for _, a := range answers {
			switch a.status {
			case 202:
				ids[a.body["id"].(string)] = true
			case 409:
			default:
				t.Fatalf("answer %d %v", a.status, a.body)
			}
		}
		if len(ids) != 1 {
			t.Fatalf("round %d: %d tasks from one Idempotency-Key (%v)", round, len(ids), answers)
		}
		again := servers[round%2].requestWith("POST", "/task", `{"payload":{"n":1},"type":"job"}`, map[string]string{"Idempotency-Key": key})
		if again.status != 202 || !ids[again.body["id"].(string)] || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("repeat: %d %v %v", again.status, again.header, again.body)
		}
		other := servers[0].requestWith("POST", "/task", `{"type":"job","payload":{"n":2}}`, map[string]string{"Idempotency-Key": key})
		if other.status != 422 {
			t.Fatalf("same key, other request: %d %v", other.status, other.body)
		}
	}
}

// Paging through 10,000 tasks while others are added lists none twice and
// misses none.
func TestListPagesThroughTenThousandTasks(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		hook := newReceiver(t, 200, true) // tasks stay pending or running
		s := start(t, append(extra, "--queue-size", "100000", "--handler", "job="+hook.URL)...)
		want := map[string]bool{}
		for b := 0; b < 10; b++ {
			for _, id := range s.submitBatch("job", 1000) {
				want[id] = true
			}
		}
		stop := make(chan struct{})
		added := make(chan int)
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					added <- n
					return
				default:
				}
				s.submitBatch("job", 10)
				n += 10
			}
		}()
		seen := map[string]bool{}
		cursor := ""
		for pages := 0; ; pages++ {
			r := s.request("GET", "/tasks?type=job&limit=500"+cursor, "")
			if r.status != 200 {
				t.Fatalf("page %d: %d %v", pages, r.status, r.body)
			}
			for _, raw := range r.body["tasks"].([]any) {
				id := raw.(map[string]any)["id"].(string)
				if seen[id] {
					t.Fatalf("task %s listed twice", id)
				}
				seen[id] = true
			}
			next, _ := r.body["next_cursor"].(string)
			if next == "" {
				break
			}
			cursor = "&cursor=" + next
		}
		close(stop)
		n := <-added
		for id := range want {
			if !seen[id] {
				t.Fatalf("task %s was never listed", id)
			}
		}
		t.Logf("listed %d tasks (%d added while paging)", len(seen), n)
	})
}

// A batch is all or nothing: a bad element stores none; one that does not
// fit under --queue-size stores none.
func TestBatchAllOrNothing(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		hook := newReceiver(t, 200, true)
		s := start(t, append(extra, "--queue-size", "5", "--workers", "1", "--handler", "job="+hook.URL)...)
		r := s.request("POST", "/tasks", `{"tasks":[{"type":"job"},{"type":"job","priority":12},{"type":"job"}]}`)
		if r.status != 400 || !strings.HasPrefix(r.body["error"].(string), "tasks[1].priority:") {
			t.Fatalf("bad element: %d %v", r.status, r.body)
		}
		var six []string
		for i := 0; i < 6; i++ {
			six = append(six, `{"type":"job"}`)
		}
		r = s.request("POST", "/tasks", `{"tasks":[`+strings.Join(six, ",")+`]}`)
		if r.status != 503 || r.header.Get("Retry-After") != "1" {
			t.Fatalf("six into five: %d %v", r.status, r.body)
		}
		st := s.request("GET", "/stats", "")
		for status, n := range st.body["counts"].(map[string]any) {
			if n != 0.0 {
				t.Fatalf("%v %s tasks stored by refused batches", n, status)
			}
		}
		ids := s.submitBatch("job", 5)
		if r := s.request("GET", "/task/"+ids[4], ""); r.status != 200 {
			t.Fatalf("a batch that fits: %d", r.status)
		}
	})
}

// Scheduled tasks start within a second of their time, not before; a
// webhook's JSON reply is the task's result.
func TestScheduledTaskStartsOnTime(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		hook := newReceiver(t, 200, false)
		calledAt := make(chan time.Time, 1)
		hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calledAt <- time.Now()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"thumbnail":"t.png"}`))
		})
		s := start(t, append(extra, "--handler", "later="+hook.URL)...)
		r := s.request("POST", "/task", `{"type":"later","delay":"1500ms"}`)
		if r.status != 202 || r.body["status"] != "scheduled" {
			t.Fatalf("submit: %d %v", r.status, r.body)
		}
		id := r.body["id"].(string)
		task := s.task(id)
		runAt, err := time.Parse(time.RFC3339Nano, task["run_at"].(string))
		if err != nil || task["status"] != "scheduled" {
			t.Fatalf("scheduled task: %v", task)
		}
		select {
		case at := <-calledAt:
			if at.Before(runAt) || at.Sub(runAt) > time.Second {
				t.Fatalf("started %v after run_at; want within 1s, never before", at.Sub(runAt))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the scheduled task never started")
		}
		done := s.waitStatus(id, "succeeded")
		if res, _ := json.Marshal(done["result"]); string(res) != `{"thumbnail":"t.png"}` {
			t.Fatalf("result %s", res)
		}
		if r := s.request("DELETE", "/task/"+id, ""); r.status != 204 {
			t.Fatalf("delete: %d", r.status)
		}
		if r := s.request("GET", "/task/"+id, ""); r.status != 404 {
			t.Fatalf("GET after delete: %d", r.status)
		}
	})
}
