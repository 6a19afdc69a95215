package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every log line names its instance, and the start-up line says the
// version and every effective setting, with secrets redacted.
func TestStartupLineAndInstanceField(t *testing.T) {
	hook := newReceiver(t, 200, false)
	s := start(t, "--instance-id", "api-1", "--log-level", "debug", "--handler", "resize="+hook.URL+"/r?token=abc123")
	id := s.waitStatus(s.submit("resize", 0, 0), "succeeded")["id"]
	if l := s.findLog("attempt started"); l == nil || l["level"] != "debug" || l["task_id"] != id || l["attempt"] != 1.0 {
		t.Fatalf("attempt started line: %v", l)
	}
	l := s.findLog("taskqueue listening")
	if l["version"] == nil || l["version"] == "" || l["queue_size"] != 10000.0 || l["memory_limit"] != float64(256<<20) || l["task_timeout"] != "30s" {
		t.Fatalf("start-up line: %v", l)
	}
	if hooks := fmt.Sprint(l["webhooks"]); !strings.Contains(hooks, "token=xxxxx") {
		t.Fatalf("webhooks in the start-up line: %s", hooks)
	}
	if strings.Contains(s.logText(), "abc123") {
		t.Fatal("a webhook's query secret reached the log")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range s.logs {
		if line["instance"] != "api-1" {
			t.Fatalf("line without the instance: %v", line)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(binary, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "taskqueue ") || !strings.Contains(string(out), "go1.") {
		t.Fatalf("--version: %v %q", err, out)
	}
}

// Invalid settings exit 2 naming the setting; --log-level takes only the
// documented levels; flag errors name flags as --help does.
func TestBadSettingsExitTwoNamingTheSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", ":99999"}, "addr"},
		{[]string{"--broker", "redis", "--redis-url", "notaurl"}, "redis-url"},
		{[]string{"--log-level", "trace"}, "log-level"},
		{[]string{"--log-level", "panic"}, "log-level"},
		{[]string{"--workers", "x"}, "--workers"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--memory-limit", "1KiB"}, "memory-limit"},
	} {
		out, err := exec.Command(binary, tc.args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) || strings.Count(string(out), "see --help") != 1 {
			t.Errorf("%v: %v %q; want exit 2 naming %s", tc.args, err, out, tc.want)
		}
	}
}

// The router's own answers are JSON; HEAD works wherever GET does;
// /readyz reports readiness.
func TestProbesAndOddRequests(t *testing.T) {
	s := start(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Head(s.base + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("HEAD %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	if r := s.request("GET", "/readyz", ""); r.status != 200 || r.body["status"] != "ready" {
		t.Fatalf("/readyz: %d %v", r.status, r.body)
	}
	// Raw requests: no client library cleans them first.
	addr := strings.TrimPrefix(s.base, "http://")
	for _, raw := range []string{
		"GET /task/../healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode < 400 || resp.StatusCode > 405 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%q: %d %v %s", strings.SplitN(raw, "\r\n", 2)[0], resp.StatusCode, resp.Header, body)
		}
	}
}

// One request with a huge number of unknown keys gets a short error, and
// the log line is short too.
func TestHugeBadRequestGetsShortAnswer(t *testing.T) {
	s := start(t, "--log-level", "debug")
	var body strings.Builder
	body.WriteString(`{"type":"noop"`)
	for i := 0; body.Len() < 1000000; i++ {
		fmt.Fprintf(&body, `,"k%d":1`, i)
	}
	body.WriteString("}")
	r := s.request("POST", "/task", body.String())
	msg, _ := r.body["error"].(string)
	if r.status != 400 || len(msg) > 400 || !strings.Contains(msg, "more") {
		t.Fatalf("%d, error of %d bytes: %.200s", r.status, len(msg), msg)
	}
	eventually(t, "the rejection's log line", func() bool { return s.findLog("request rejected") != nil })
	for _, l := range s.logsMatching("request rejected") {
		if line := fmt.Sprint(l); len(line) > 1000 {
			t.Fatalf("log line of %d bytes", len(line))
		}
	}
}

// A webhook that sends its status line and then stalls has not answered:
// at --task-timeout the attempt fails as timed out.
func TestWebhookStallingAfterStatusTimesOut(t *testing.T) {
	release := make(chan struct{})
	hook := newReceiver(t, 200, false)
	hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	s := start(t, "--handler", "stall="+hook.URL, "--task-timeout", "500ms")
	task := s.waitStatus(s.submit("stall", 0, 0), "failed")
	if task["last_error"] != "attempt timed out after 500ms" {
		t.Fatalf("task: %v", task)
	}
}

// The whole shutdown fits inside --shutdown-timeout, even with an attempt
// that does not end when cancelled.
func TestShutdownFitsItsBudget(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	hook := newReceiver(t, 200, false)
	hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release // ignores the client going away
	})
	defer close(release)
	s := start(t, "--handler", "stuck="+hook.URL, "--shutdown-timeout", "2s")
	s.submit("stuck", 0, 0)
	select {
	case <-arrived:
	case <-time.After(waitFor):
		t.Fatal("the attempt never reached the webhook")
	}
	began := time.Now()
	s.signal()
	if err := s.wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if took := time.Since(began); took > 2500*time.Millisecond {
		t.Fatalf("shutdown took %v with --shutdown-timeout 2s", took)
	}
}

// A second signal ends the process at once, with a line saying what it
// abandons, and the conventional exit code.
func TestSecondSignalSaysWhatItAbandons(t *testing.T) {
	hook := newReceiver(t, 200, true)
	s := start(t, "--workers", "1", "--handler", "job="+hook.URL)
	s.submit("job", 0, 0)
	s.submit("job", 0, 0)
	eventually(t, "the first task to run", func() bool { return hook.count() == 1 })
	s.signal()
	eventually(t, "shutdown to begin", func() bool { return s.findLog("shutdown signal received") != nil })
	s.signal()
	err := s.wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 143 {
		t.Fatalf("exit after a second SIGTERM: %v; want code 143", err)
	}
	l := s.findLog("second signal")
	if l == nil || l["running_attempts"] != 1.0 || l["pending_dropped"] != 1.0 {
		t.Fatalf("abandon line: %v", l)
	}
}

// `taskqueue healthcheck` (the image's HEALTHCHECK, as distroless has no
// shell) exits 0 while the service answers on its address, 1 otherwise.
func TestHealthcheckSubcommand(t *testing.T) {
	s := start(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.base, "http://"))
	out, err := exec.Command(binary, "healthcheck", "--addr", ":"+port).CombinedOutput()
	if err != nil {
		t.Fatalf("healthcheck of a live service: %v %s", err, out)
	}
	cmd := exec.Command(binary, "healthcheck")
	cmd.Env = []string{"TASKQUEUE_ADDR=127.0.0.1:1"}
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("healthcheck with nothing listening: %v %s; want exit 1", err, out)
	}
}

// The memory broker holds at most --memory-limit bytes of tasks: a flood of
// 1 MB payloads keeps the process within the limit plus a fixed overhead,
// forgetting finished tasks to make room, and whatever cannot fit gets 503
// with Retry-After, never a crash.
func TestMemoryLimitBoundsRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the service for several seconds")
	}
	// The race detector multiplies memory; measure a plain build.
	dir := t.TempDir()
	plain := filepath.Join(dir, "taskqueue")
	if out, err := exec.Command("go", "build", "-o", plain, "../cmd/taskqueue").CombinedOutput(); err != nil {
		t.Fatalf("build: %v %s", err, out)
	}
	const limitMiB = 64
	hook := newReceiver(t, 500, false) // failing: tasks stay waiting to retry
	old := binary
	binary = plain
	s := start(t, "--memory-limit", fmt.Sprintf("%dMiB", limitMiB), "--queue-size", "100000",
		"--handler", "fail="+hook.URL, "--retry-initial-backoff", "1h", "--retry-max-backoff", "1h")
	binary = old
	payload := `{"type":"%s","max_retries":5,"payload":{"k":"` + strings.Repeat("x", 1000000-60) + `"}}`
	var mu sync.Mutex
	counts := map[int]int{}
	deadline := time.Now().Add(8 * time.Second)
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				typ := "noop"
				if i%2 == 0 {
					typ = "fail" // these stay held, waiting to retry
				}
				resp, err := http.Post(s.base+"/task", "application/json", strings.NewReader(fmt.Sprintf(payload, typ)))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
					t.Error("503 without Retry-After")
				}
				mu.Lock()
				counts[resp.StatusCode]++
				mu.Unlock()
			}
		}(c)
	}
	peak := 0
	for time.Now().Before(deadline) {
		peak = max(peak, rssMiB(t, s.cmd.Process.Pid))
		time.Sleep(50 * time.Millisecond) // sampling interval
	}
	wg.Wait()
	peak = max(peak, rssMiB(t, s.cmd.Process.Pid))
	t.Logf("responses %v; peak RSS %d MiB with --memory-limit %dMiB", counts, peak, limitMiB)
	if counts[202] < 64 || counts[503] == 0 {
		t.Fatalf("responses %v: want the limit reached (some 202, then 503s)", counts)
	}
	if peak > limitMiB+192 {
		t.Fatalf("peak RSS %d MiB; want at most the %d MiB limit plus 192 MiB", peak, limitMiB)
	}
	if r := s.request("GET", "/healthz", ""); r.status != 200 {
		t.Fatal("service unhealthy after the flood")
	}
}

func rssMiB(t *testing.T, pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb / 1024
		}
	}
	return 0
}
