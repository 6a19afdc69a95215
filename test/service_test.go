package test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestSeedRequestSucceeds(t *testing.T) {
	s := start(t)
	r := s.request("POST", "/task", `{"type":"example_task","payload":{"key":"value"},"max_retries":3,"priority":2}`)
	if r.status != 202 || r.body["message"] != "Task enqueued" || r.header.Get("Location") != "/task/"+r.body["id"].(string) {
		t.Fatalf("submit: %d %v %v", r.status, r.header, r.body)
	}
	id := r.body["id"].(string)
	task := s.waitStatus(id, "succeeded")
	if task["attempts"] != 1.0 || task["priority"] != 2.0 || task["max_retries"] != 3.0 || task["type"] != "example_task" {
		t.Fatalf("task: %v", task)
	}
	for _, f := range []string{"created_at", "updated_at", "started_at", "finished_at"} {
		if _, err := time.Parse(time.RFC3339, task[f].(string)); err != nil || !strings.HasSuffix(task[f].(string), "Z") {
			t.Fatalf("%s = %v is not RFC 3339 UTC", f, task[f])
		}
	}
	eventually(t, "the example_task log line", func() bool {
		l := s.findLog("example_task ran")
		return l != nil && l["task_id"] == id && l["payload_bytes"] == 15.0 && fmt.Sprint(l["payload_keys"]) == "[key]"
	})
	if strings.Contains(s.logText(), `"value"`) {
		t.Fatal("a payload value reached the log at info")
	}
	if l := s.findLog("task attempt succeeded"); l["task_id"] != id || l["attempt"] != 1.0 || l["duration_ms"] == nil || l["level"] != "info" {
		t.Fatalf("outcome log line: %v", l)
	}
}

func TestPriorityOrderWithOneWorker(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "1", "--handler", "job="+hook.URL)
	s.submit("job", 0, 0) // occupies the only worker
	eventually(t, "the first task to run", func() bool { return hook.count() == 1 })
	priorities := []int{1, 5, 9, 5, 0, 9, 3}
	for _, p := range priorities {
		s.submit("job", p, 0)
	}
	hook.releaseAll()
	eventually(t, "every task to run", func() bool { return hook.count() == len(priorities)+1 })
	calls, _, _ := hook.snapshot()
	var got []int
	for _, c := range calls[1:] {
		got = append(got, c.Payload["p"])
	}
	if fmt.Sprint(got) != "[9 9 5 5 3 1 0]" {
		t.Fatalf("ran in priority order %v", got)
	}
}

func TestPriorityTiesRunInSubmissionOrder(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "1", "--handler", "job="+hook.URL)
	s.submit("job", 9, 0)
	eventually(t, "the first task to run", func() bool { return hook.count() == 1 })
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, s.submit("job", 4, 0))
	}
	hook.releaseAll()
	eventually(t, "every task to run", func() bool { return hook.count() == 6 })
	calls, _, _ := hook.snapshot()
	for i, c := range calls[1:] {
		if c.ID != ids[i] {
			t.Fatalf("call %d was %s; want %s (FIFO)", i, c.ID, ids[i])
		}
	}
}

func TestRetriesBackOffThenFail(t *testing.T) {
	hook := newReceiver(t, 500, false)
	s := start(t, "--handler", "flaky="+hook.URL, "--retry-initial-backoff", "100ms", "--retry-max-backoff", "1s")
	id := s.submit("flaky", 0, 3)
	task := s.waitStatus(id, "failed")
	if task["attempts"] != 4.0 || task["retries_left"] != 0.0 || task["last_error"] != `webhook for type "flaky" returned 500` {
		t.Fatalf("task: %v", task)
	}
	calls, _, _ := hook.snapshot()
	if len(calls) != 4 {
		t.Fatalf("%d webhook calls; want 4", len(calls))
	}
	for i, c := range calls {
		if c.Attempt != i+1 || c.ID != id {
			t.Fatalf("call %d: %+v", i, c)
		}
	}
	// Backoff after failed attempt n is 100ms×2^(n-1) ±20%; allow generous
	// scheduling slack above, none below the jitter floor.
	for i, base := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		gap := calls[i+1].At.Sub(calls[i].At)
		if gap < base*8/10 || gap > base*12/10+250*time.Millisecond {
			t.Errorf("gap before attempt %d = %v; want about %v", i+2, gap, base)
		}
	}
	retries := s.logsMatching("will retry")
	if len(retries) != 3 || retries[0]["level"] != "warning" || retries[0]["error"] != `webhook for type "flaky" returned 500` {
		t.Fatalf("retry log lines: %v", retries)
	}
	if l := s.findLog("no retries left"); l == nil || l["level"] != "error" || l["attempt"] != 4.0 {
		t.Fatalf("give-up log line: %v", l)
	}
}

func TestRetryingStatusShowsNextAttempt(t *testing.T) {
	hook := newReceiver(t, 503, false)
	s := start(t, "--handler", "slow="+hook.URL, "--retry-initial-backoff", "1h", "--retry-max-backoff", "1h")
	id := s.submit("slow", 0, 1)
	task := s.waitStatus(id, "retrying")
	next, err := time.Parse(time.RFC3339, task["next_attempt_at"].(string))
	if err != nil || time.Until(next) < 40*time.Minute || task["last_error"] != `webhook for type "slow" returned 503` || task["attempts"] != 1.0 {
		t.Fatalf("retrying task: %v", task)
	}
}

func TestConcurrencyBound(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "3", "--handler", "job="+hook.URL)
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, s.submit("job", 0, 0))
	}
	eventually(t, "three attempts in flight", func() bool { _, n, _ := hook.snapshot(); return n == 3 })
	counts := map[string]int{}
	for _, id := range ids {
		counts[s.task(id)["status"].(string)]++
	}
	if counts["running"] != 3 || counts["pending"] != 7 {
		t.Fatalf("statuses while workers are busy: %v", counts)
	}
	hook.releaseAll()
	for _, id := range ids {
		s.waitStatus(id, "succeeded")
	}
	if _, _, peak := hook.snapshot(); peak != 3 {
		t.Fatalf("peak concurrency %d; want 3", peak)
	}
}

func TestQueueFullRefusesAndLosesNothing(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "1", "--queue-size", "5", "--handler", "job="+hook.URL)
	accepted := []string{s.submit("job", 0, 0)}
	eventually(t, "the first task to run", func() bool { return hook.count() == 1 })
	refused := 0
	for i := 0; i < 8; i++ {
		r := s.request("POST", "/task", `{"type":"job"}`)
		switch r.status {
		case 202:
			accepted = append(accepted, r.body["id"].(string))
		case 503:
			refused++
			if r.header.Get("Retry-After") != "1" || !strings.Contains(r.body["error"].(string), "queue is full") {
				t.Fatalf("503 without Retry-After or clear error: %v %v", r.header, r.body)
			}
		default:
			t.Fatalf("status %d", r.status)
		}
	}
	if len(accepted) != 6 || refused != 3 {
		t.Fatalf("accepted %d, refused %d; want 6 and 3 (one running + 5 pending)", len(accepted), refused)
	}
	hook.releaseAll()
	for _, id := range accepted {
		s.waitStatus(id, "succeeded")
	}
	calls, _, _ := hook.snapshot()
	seen := map[string]int{}
	for _, c := range calls {
		seen[c.ID]++
	}
	if len(calls) != 6 || len(seen) != 6 {
		t.Fatalf("webhook saw %d calls for %d tasks; want each accepted task exactly once", len(calls), len(seen))
	}
	for _, id := range accepted {
		if seen[id] != 1 {
			t.Fatalf("accepted task %s ran %d times", id, seen[id])
		}
	}
}

func TestTaskTimeout(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--handler", "stuck="+hook.URL, "--task-timeout", "200ms")
	id := s.submit("stuck", 0, 0)
	task := s.waitStatus(id, "failed")
	if task["last_error"] != "attempt timed out after 200ms" {
		t.Fatalf("task: %v", task)
	}
}

func TestGracefulShutdownFinishesInFlightTask(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "1", "--handler", "job="+hook.URL)
	inFlight := s.submit("job", 0, 0)
	eventually(t, "the task to run", func() bool { return hook.count() == 1 })
	s.submit("job", 0, 0) // stays pending: the only worker is busy
	s.signal()
	eventually(t, "shutdown to begin", func() bool { return s.findLog("shutdown signal received") != nil })
	r := s.request("POST", "/task", `{"type":"job"}`)
	if r.status != 503 || r.header.Get("Retry-After") != "1" || !strings.Contains(r.body["error"].(string), "shutting down") {
		t.Fatalf("submission during shutdown: %d %v %v", r.status, r.header, r.body)
	}
	if r := s.request("GET", "/readyz", ""); r.status != 503 || r.body["reason"] != "shutting down" {
		t.Fatalf("/readyz during shutdown: %d %v", r.status, r.body)
	}
	if r := s.request("GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("/healthz (liveness) during shutdown: %d", r.status)
	}
	if r := s.request("GET", "/task/"+inFlight, ""); r.status != 200 || r.body["status"] != "running" {
		t.Fatalf("GET during shutdown: %d %v", r.status, r.body)
	}
	hook.releaseAll()
	if err := s.wait(); err != nil {
		t.Fatalf("exit: %v (want code 0)", err)
	}
	if l := s.findLog("task attempt succeeded"); l == nil || l["task_id"] != inFlight {
		t.Fatalf("in-flight task did not finish: %v", l)
	}
	if l := s.findLog("taskqueue stopped"); l == nil || l["pending_dropped"] != 1.0 || l["retrying_dropped"] != 0.0 {
		t.Fatalf("drop count not logged: %v", l)
	}
	if hook.count() != 1 {
		t.Fatal("a pending task started during shutdown")
	}
}

func TestShutdownTimeoutCancelsStuckAttempt(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "1", "--handler", "job="+hook.URL, "--shutdown-timeout", "200ms")
	s.submit("job", 0, 0)
	eventually(t, "the task to run", func() bool { return hook.count() == 1 })
	s.signal()
	if err := s.wait(); err != nil {
		t.Fatalf("exit: %v (want code 0)", err)
	}
	if l := s.findLog("handed back"); l == nil {
		t.Fatal("cancelled attempt not reported")
	}
	if l := s.findLog("taskqueue stopped"); l["pending_dropped"] != 1.0 {
		t.Fatalf("handed-back task not counted as dropped: %v", l)
	}
}

func TestBadInputOverTheWire(t *testing.T) {
	s := start(t, "--max-body-bytes", "100", "--log-level", "debug")
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/task", ``, 400, "empty"},
		{"POST", "/task", `{"type":"example_task","priority":2.5}`, 400, "priority"},
		{"POST", "/task", `{"type":"example_task","priority":10}`, 400, "priority"},
		{"POST", "/task", `{"type":"example_task","max_retries":101}`, 400, "max_retries"},
		{"POST", "/task", `{"type":"example_task","payload":[]}`, 400, "payload"},
		{"POST", "/task", `{"type":"other"}`, 400, "known types: example_task"},
		{"POST", "/task", `{"type":"example_task","x":1}`, 400, "unknown field"},
		{"POST", "/task", "{\"type\":\"example_task\",\"payload\":{\"a\":\"\xff\"}}", 400, "UTF-8"},
		{"POST", "/task", `{"type":"example_task","payload":{"k":"` + strings.Repeat("x", 200) + `"}}`, 413, "limit of 100 bytes"},
		{"GET", "/task/nope", "", 400, "not a valid task id"},
		{"GET", "/task/01890a5d-ac96-774b-bcce-b302099a8057", "", 404, "not found"},
		{"DELETE", "/task", "", 405, "not allowed"},
		{"GET", "/nope", "", 404, "no such endpoint"},
	} {
		r := s.request(tc.method, tc.path, tc.body)
		if msg, _ := r.body["error"].(string); r.status != tc.status || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s %.40q: %d %v; want %d containing %q", tc.method, tc.path, tc.body, r.status, r.body, tc.status, tc.want)
		}
	}
	if r := s.request("GET", "/healthz", ""); r.status != 200 {
		t.Fatal("service unhealthy after bad input")
	}
	rejected := s.logsMatching("request rejected")
	if len(rejected) < 13 {
		t.Fatal("rejections were not logged")
	}
	for _, l := range rejected {
		if l["level"] != "debug" {
			t.Fatalf("client error logged at %v: %v", l["level"], l)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "TASKQUEUE_WORKERS"},
		{[]string{"--workers", "-1"}, 2, "workers: must not be negative"},
		{[]string{"--retry-max-backoff", "1ms"}, 2, "retry-max-backoff"},
	} {
		out, err := exec.Command(binary, tc.args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
	s := start(t)
	taken := strings.TrimPrefix(s.base, "http://")
	out, err := exec.Command(binary, "--addr", taken).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "listen on") {
		t.Fatalf("port taken: %v %s", err, out)
	}
}

func TestEnvironmentConfiguresService(t *testing.T) {
	hook := newReceiver(t, 200, false)
	cmd := exec.Command(binary)
	cmd.Env = []string{"TASKQUEUE_ADDR=127.0.0.1:0", "TASKQUEUE_HANDLERS=viaenv=" + hook.URL, "TASKQUEUE_LOG_LEVEL=loud"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "log-level") {
		t.Fatalf("bad env: %v %s", err, out)
	}
	s := startWithEnv(t, []string{"TASKQUEUE_HANDLERS=viaenv=" + hook.URL})
	id := s.submit("viaenv", 0, 0)
	s.waitStatus(id, "succeeded")
}
