// Package test holds black-box tests: they build the real taskqueue
// binary, start it on a free port and drive it over HTTP.
package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "taskqueue-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "taskqueue")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/taskqueue")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build taskqueue:", err)
		os.Exit(1)
	}
	if err := installSpecCheck(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if spec.report() > 0 && code == 0 {
		code = 1
	}
	os.Exit(code)
}

const waitFor = 15 * time.Second

// eventually polls cond every 10ms until it is true or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// server is one running taskqueue process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
	done chan struct{}
	exit error

	mu   sync.Mutex
	logs []map[string]any
}

// start runs the binary with JSON logs on a free loopback port plus args,
// and waits until /healthz answers.
func start(t *testing.T, args ...string) *server {
	t.Helper()
	s := startNoWait(t, args...)
	var addr string
	eventually(t, "the listening log line", func() bool {
		if l := s.findLog("taskqueue listening"); l != nil {
			addr = l["addr"].(string)
			return true
		}
		select {
		case <-s.done:
			t.Fatalf("server exited early: %v\n%s", s.exit, s.logText())
		default:
		}
		return false
	})
	s.base = "http://" + addr
	spec.watch(s.base)
	eventually(t, "/healthz", func() bool {
		resp, err := http.Get(s.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

func startNoWait(t *testing.T, args ...string) *server {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, extraEnv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"msg": "NOT JSON: " + sc.Text()}
			}
			s.mu.Lock()
			s.logs = append(s.logs, m)
			s.mu.Unlock()
		}
		s.exit = cmd.Wait()
		if stderr.Len() > 0 {
			s.mu.Lock()
			s.logs = append(s.logs, map[string]any{"msg": "STDERR: " + stderr.String()})
			s.mu.Unlock()
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("server log:\n%s", s.logText())
		}
	})
	return s
}

func (s *server) findLog(msg string) map[string]any {
	for _, l := range s.logsMatching(msg) {
		return l
	}
	return nil
}

func (s *server) logsMatching(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.logs {
		if m, _ := l["msg"].(string); strings.Contains(m, msg) {
			out = append(out, l)
		}
	}
	return out
}

func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.logs {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// stop sends SIGTERM and waits for the process to exit.
func (s *server) signal() {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
}

func (s *server) wait() error {
	select {
	case <-s.done:
		return s.exit
	case <-time.After(waitFor):
		s.t.Fatal("server did not exit")
		return nil
	}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func (s *server) request(method, path, body string) response {
	s.t.Helper()
	return s.requestWith(method, path, body, nil)
}

// requestWith is request with extra headers.
func (s *server) requestWith(method, path, body string, header map[string]string) response {
	s.t.Helper()
	got := s.rawRequest(method, path, body, header)
	raw := []byte(got.text)
	r := response{status: got.status, header: got.header}
	if got.status == http.StatusNoContent && len(raw) == 0 {
		return r
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		s.t.Fatalf("%s %s: Content-Type %q, body %s", method, path, ct, raw)
	}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		s.t.Fatalf("%s %s: body is not a JSON object: %s", method, path, raw)
	}
	return r
}

// submit posts a task and returns its id, failing the test unless 202.
func (s *server) submit(typ string, priority, maxRetries int) string {
	s.t.Helper()
	r := s.request("POST", "/task", fmt.Sprintf(`{"type":%q,"payload":{"p":%d},"priority":%d,"max_retries":%d}`, typ, priority, priority, maxRetries))
	if r.status != http.StatusAccepted {
		s.t.Fatalf("submit: %d %v", r.status, r.body)
	}
	return r.body["id"].(string)
}

// submitBatch posts n tasks of typ in one POST /tasks and returns their
// ids, failing the test unless 202.
func (s *server) submitBatch(typ string, n int) []string {
	s.t.Helper()
	elems := make([]string, n)
	for i := range elems {
		elems[i] = fmt.Sprintf(`{"type":%q,"payload":{"p":%d}}`, typ, i)
	}
	r := s.request("POST", "/tasks", `{"tasks":[`+strings.Join(elems, ",")+`]}`)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("submit batch: %d %v", r.status, r.body)
	}
	var ids []string
	for _, id := range r.body["ids"].([]any) {
		ids = append(ids, id.(string))
	}
	return ids
}

func (s *server) task(id string) map[string]any {
	s.t.Helper()
	r := s.request("GET", "/task/"+id, "")
	if r.status != 200 {
		s.t.Fatalf("GET task %s: %d %v", id, r.status, r.body)
	}
	return r.body
}

func (s *server) waitStatus(id, status string) map[string]any {
	s.t.Helper()
	var task map[string]any
	eventually(s.t, "task "+id+" to be "+status, func() bool {
		task = s.task(id)
		return task["status"] == status
	})
	return task
}

// call is one webhook delivery seen by the receiver.
type call struct {
	ID      string
	Attempt int
	Payload map[string]int
	At      time.Time
}

// receiver is a webhook endpoint that records calls, can hold them until
// released, and answers with a chosen status.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	calls    []call
	inFlight int
	peak     int
	hold     chan struct{} // while open, calls wait
	gate     chan struct{} // if set, each call waits for one value
	status   int
}

func newReceiver(t *testing.T, status int, hold bool) *receiver {
	r := &receiver{status: status}
	if hold {
		r.hold = make(chan struct{})
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var c call
		_ = json.NewDecoder(req.Body).Decode(&c)
		c.At = time.Now()
		r.mu.Lock()
		r.calls = append(r.calls, c)
		r.inFlight++
		r.peak = max(r.peak, r.inFlight)
		hold := r.hold
		r.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
			}
		}
		if r.gate != nil {
			select {
			case <-r.gate:
			case <-req.Context().Done():
			}
		}
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
		w.WriteHeader(r.status)
	}))
	t.Cleanup(func() { r.releaseAll(); r.Close() })
	return r
}

// newGatedReceiver returns a receiver whose calls each wait for a value on
// its gate, so a test can free one worker at a time.
func newGatedReceiver(t *testing.T) *receiver {
	r := newReceiver(t, 200, false)
	r.gate = make(chan struct{}, 1000)
	return r
}

func (r *receiver) releaseAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hold != nil {
		close(r.hold)
		r.hold = nil
	}
}

func (r *receiver) snapshot() (calls []call, inFlight, peak int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...), r.inFlight, r.peak
}

func (r *receiver) count() int {
	c, _, _ := r.snapshot()
	return len(c)
}

// startWithEnv is start with extra environment variables.
func startWithEnv(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	old := extraEnv
	extraEnv = env
	defer func() { extraEnv = old }()
	return start(t, args...)
}

var extraEnv []string
