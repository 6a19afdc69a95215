package test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// keygen runs `taskqueue keygen` and returns the key and its file line.
func keygen(t *testing.T, name, roles string) (key, line string) {
	t.Helper()
	out, err := exec.Command(binary, "keygen", "--name", name, "--roles", roles).Output()
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "tq_") || len(lines[0]) < 46 {
		t.Fatalf("keygen printed %q", out)
	}
	return lines[0], lines[1]
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil { // whole, like an operator's deploy
		t.Fatal(err)
	}
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

type keyset struct{ submit, read, admin, readSubmit string }

// startWithKeys starts a server with an API key file of four clients.
func startWithKeys(t *testing.T, extra ...string) (*server, keyset, string) {
	var k keyset
	var lines []string
	for _, c := range []struct {
		name, roles string
		key         *string
	}{{"submitter", "submit", &k.submit}, {"reader", "read", &k.read}, {"operator", "admin", &k.admin}, {"billing", "submit,read", &k.readSubmit}} {
		key, line := keygen(t, c.name, c.roles)
		*c.key = key
		lines = append(lines, line)
	}
	path := filepath.Join(t.TempDir(), "keys")
	writeFile(t, path, "# test keys\n"+strings.Join(lines, "\n")+"\n")
	return start(t, append([]string{"--api-keys-file", path}, extra...)...), k, path
}

// Every route: no key and a wrong key get 401 with a Bearer challenge; a
// key without the role gets 403 naming it; the right role gets through.
// The probes and the spec are open.
func TestEveryRouteNeedsItsRole(t *testing.T) {
	s, k, _ := startWithKeys(t)
	id := s.requestWith("POST", "/task", `{"type":"noop"}`, bearer(k.submit)).body["id"].(string)
	s.waitStatusWith(id, "succeeded", k.read)
	wrongKey := "tq_" + strings.Repeat("A", 43)
	routes := []struct {
		method, path, body string
		need               string
		lacking            string // a key without the role
		ok                 int
	}{
		{"POST", "/task", `{"type":"noop"}`, "submit", k.read, 202},
		{"POST", "/tasks", `{"tasks":[{"type":"noop"}]}`, "submit", k.read, 202},
		{"GET", "/tasks", "", "read", k.submit, 200},
		{"HEAD", "/tasks", "", "read", k.submit, 200},
		{"GET", "/task/" + id, "", "read", k.submit, 200},
		{"GET", "/stats", "", "read", k.submit, 200},
		{"GET", "/types", "", "read", k.submit, 200},
		{"GET", "/metrics", "", "read", k.submit, 200},
		{"POST", "/task/" + id + "/cancel", "", "admin", k.readSubmit, 409},
		{"POST", "/task/" + id + "/retry", "", "admin", k.readSubmit, 409},
		{"POST", "/tasks/retry", `{"status":"failed"}`, "admin", k.readSubmit, 200},
		{"POST", "/types/noop/pause", "", "admin", k.readSubmit, 200},
		{"POST", "/types/noop/resume", "", "admin", k.readSubmit, 200},
		{"DELETE", "/task/" + id, "", "admin", k.readSubmit, 204},
	}
	for _, r := range routes {
		name := r.method + " " + r.path
		for _, h := range []map[string]string{nil, bearer(wrongKey), {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}, bearer(k.admin + "x")} {
			got := s.rawRequest(r.method, r.path, r.body, h)
			if got.status != 401 || !strings.HasPrefix(got.header.Get("WWW-Authenticate"), `Bearer realm="taskqueue"`) {
				t.Errorf("%s with %v: %d %q, want 401 with a Bearer challenge", name, h, got.status, got.header.Get("WWW-Authenticate"))
			}
		}
		got := s.rawRequest(r.method, r.path, r.body, bearer(r.lacking))
		if got.status != 403 || (r.method != "HEAD" && !strings.Contains(got.text, `\"`+r.need+`\"`)) {
			t.Errorf("%s without role %s: %d %s, want 403 naming the role", name, r.need, got.status, got.text)
		}
		if got := s.rawRequest(r.method, r.path, r.body, bearer(k.admin)); got.status != r.ok {
			t.Errorf("%s as admin: %d %s, want %d", name, got.status, got.text, r.ok)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if got := s.rawRequest("GET", path, "", nil); got.status != 200 {
			t.Errorf("GET %s without a key: %d", path, got.status)
		}
	}
	if got := s.rawRequest("GET", "/nowhere", "", nil); got.status != 401 {
		t.Errorf("unknown path without a key: %d, want 401", got.status)
	}
	if got := s.rawRequest("GET", "/nowhere", "", bearer(k.read)); got.status != 404 {
		t.Errorf("unknown path with a key: %d, want 404", got.status)
	}
	// A 1 MB header is refused by the HTTP server before anything else;
	// the service keeps answering.
	if got := s.rawRequest("GET", "/stats", "", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 1<<20)}); got.status != 431 {
		t.Errorf("1 MB Authorization header: %d, want 431", got.status)
	}
	if got := s.rawRequest("GET", "/stats", "", bearer(k.read)); got.status != 200 {
		t.Fatalf("after the big header: %d", got.status)
	}
	// Keys never reach the log; names do, with what they did.
	logs := s.logText()
	for _, key := range []string{k.submit, k.read, k.admin, k.readSubmit, wrongKey} {
		if strings.Contains(logs, key) {
			t.Fatal("a key was logged")
		}
	}
	sub := s.findLog("task submitted")
	if sub == nil || sub["client"] != "submitter" {
		t.Fatalf("submission log line %v, want client submitter", sub)
	}
	if l := s.findLog("task type paused"); l == nil || l["client"] != "operator" {
		t.Fatalf("pause log line %v, want client operator", l)
	}
	if s.findLog("the API is open") != nil {
		t.Fatal("open-API warning with keys configured")
	}
}

type rawResponse struct {
	status int
	header http.Header
	text   string
}

// rawRequest sends a request and returns whatever comes back.
func (s *server) rawRequest(method, path, body string, header map[string]string) rawResponse {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, text: string(raw)}
}

func (s *server) waitStatusWith(id, status, key string) {
	s.t.Helper()
	eventually(s.t, "task "+id+" to be "+status, func() bool {
		r := s.requestWith("GET", "/task/"+id, "", bearer(key))
		return r.status == 200 && r.body["status"] == status
	})
}

// Two clients using the same Idempotency-Key get a task each; one client
// repeating it gets its first answer again.
func TestIdempotencyKeysAreScopedPerClient(t *testing.T) {
	s, k, _ := startWithKeys(t)
	h1 := map[string]string{"Authorization": "Bearer " + k.submit, "Idempotency-Key": "order-42"}
	h2 := map[string]string{"Authorization": "Bearer " + k.readSubmit, "Idempotency-Key": "order-42"}
	a := s.requestWith("POST", "/task", `{"type":"noop"}`, h1)
	b := s.requestWith("POST", "/task", `{"type":"noop"}`, h2)
	again := s.requestWith("POST", "/task", `{"type":"noop"}`, h1)
	if a.status != 202 || b.status != 202 || a.body["id"] == b.body["id"] {
		t.Fatalf("two clients: %d %v, %d %v", a.status, a.body, b.status, b.body)
	}
	if again.status != 202 || again.body["id"] != a.body["id"] || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %d %v %v", again.status, again.body, again.header)
	}
}

// Without keys the API is open, and the start-up log says so.
func TestOpenAPIWarns(t *testing.T) {
	s := start(t)
	l := s.findLog("the API is open")
	if l == nil || l["level"] != "warning" {
		t.Fatalf("open-API warning %v", l)
	}
	if r := s.request("GET", "/stats", ""); r.status != 200 {
		t.Fatalf("open API: %d", r.status)
	}
}

// A key file with a bad line stops the start (exit 2) naming the line.
func TestBadKeyFileRefusedAtStart(t *testing.T) {
	_, good := keygen(t, "a", "read")
	path := filepath.Join(t.TempDir(), "keys")
	writeFile(t, path, good+"\n# fine\nbilling submit,write "+strings.Repeat("ab", 32)+"\n")
	s := startNoWait(t, "--api-keys-file", path)
	err := s.wait()
	exit, ok := err.(*exec.ExitError)
	if !ok || exit.ExitCode() != 2 || !strings.Contains(s.logText(), "line 3") || !strings.Contains(s.logText(), `\"write\" is not a role`) {
		t.Fatalf("exit %v, log:\n%s", err, s.logText())
	}
}

// SIGHUP under load: new keys work, removed keys stop, no request in
// flight fails; a bad file keeps the keys in use and logs an error.
func TestKeysReloadOnSIGHUPUnderLoad(t *testing.T) {
	s, k, path := startWithKeys(t)
	newKey, newLine := keygen(t, "newcomer", "submit")
	_, keepLine := keygen(t, "keeper", "read")
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := s.rawRequest("POST", "/task", `{"type":"noop"}`, bearer(k.readSubmit))
				sent.Add(1)
				if r.status != 202 {
					failed.Add(1)
				}
			}
		}()
	}
	eventually(t, "load to run", func() bool { return sent.Load() > 50 })
	// billing's key stays, submitter's goes, newcomer arrives.
	content, _ := os.ReadFile(path)
	var kept []string
	for _, l := range strings.Split(string(content), "\n") {
		if !strings.HasPrefix(l, "submitter ") {
			kept = append(kept, l)
		}
	}
	writeFile(t, path, strings.Join(kept, "\n")+"\n"+newLine+"\n")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reload", func() bool { return s.findLog("SIGHUP: API keys reloaded") != nil })
	mark := sent.Load()
	eventually(t, "more load after the reload", func() bool { return sent.Load() > mark+50 })
	if r := s.rawRequest("POST", "/task", `{"type":"noop"}`, bearer(newKey)); r.status != 202 {
		t.Fatalf("new key after reload: %d", r.status)
	}
	if r := s.rawRequest("POST", "/task", `{"type":"noop"}`, bearer(k.submit)); r.status != 401 {
		t.Fatalf("removed key after reload: %d", r.status)
	}
	// A broken file: the keys in use stay.
	writeFile(t, path, keepLine+"\nnot a key line\n")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed reload's error", func() bool { return s.findLog("cannot reload the API keys") != nil })
	if r := s.rawRequest("POST", "/task", `{"type":"noop"}`, bearer(newKey)); r.status != 202 {
		t.Fatalf("key in use after a failed reload: %d", r.status)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during the reloads", n, sent.Load())
	}
	if l := s.findLog("cannot reload the API keys"); !strings.Contains(fmt.Sprint(l["error"]), "line 2") {
		t.Fatalf("reload error does not name the line: %v", l)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "taskqueue test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(priv)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// servedSerial connects over TLS and returns the certificate's serial.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading which certificate is served
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// --tls-cert/--tls-key serve HTTPS; SIGHUP swaps the certificate; the
// healthcheck subcommand speaks HTTPS too.
func TestTLSServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir, 1)
	s := startNoWait(t, "--tls-cert", certFile, "--tls-key", keyFile)
	var addr string
	eventually(t, "the listening line", func() bool {
		if l := s.findLog("taskqueue listening"); l != nil {
			addr = l["addr"].(string)
			return l["tls"] == true
		}
		return false
	})
	pool := x509.NewCertPool()
	pem1, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem1)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	eventually(t, "HTTPS /healthz", func() bool {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
	_, port, _ := net.SplitHostPort(addr)
	hc := exec.Command(binary, "healthcheck", "--addr", "127.0.0.1:"+port, "--tls-cert", certFile, "--tls-key", keyFile)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Fatalf("healthcheck over TLS: %v %s", err, out)
	}
	if got := servedSerial(t, addr); got != 1 {
		t.Fatalf("serial %d", got)
	}
	selfSigned(t, dir, 2)
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new certificate", func() bool { return servedSerial(t, addr) == 2 })
	writeFile(t, keyFile, "garbage")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed reload's error", func() bool { return s.findLog("cannot reload the TLS certificate") != nil })
	if got := servedSerial(t, addr); got != 2 {
		t.Fatalf("after a failed reload: serial %d", got)
	}
}

// Webhook calls carry Standard Webhooks signatures that the reference
// library verifies, one per secret, with the task id as webhook-id.
func TestWebhooksAreSigned(t *testing.T) {
	secrets := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + strings.Repeat("c2VjcmV0", 4)}
	type seen struct {
		header http.Header
		body   []byte
	}
	calls := make(chan seen, 10)
	hook := newReceiver(t, 200, false)
	hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		calls <- seen{r.Header.Clone(), body}
		if r.Header.Get("X-Task-Attempt") == "1" {
			w.WriteHeader(500) // a second attempt, same webhook-id
		}
	})
	s := startWithEnv(t, []string{"TASKQUEUE_WEBHOOK_SECRETS=" + strings.Join(secrets, ",")},
		"--handler", "signed="+hook.URL, "--retry-initial-backoff", "10ms")
	id := s.submit("signed", 0, 1)
	s.waitStatus(id, "succeeded")
	for attempt := 1; attempt <= 2; attempt++ {
		c := <-calls
		if c.header.Get("webhook-id") != id {
			t.Fatalf("attempt %d: webhook-id %q, want %s", attempt, c.header.Get("webhook-id"), id)
		}
		for _, secret := range secrets {
			v, _ := standardwebhooks.NewWebhook(secret)
			if err := v.Verify(c.body, c.header); err != nil {
				t.Fatalf("attempt %d: %v", attempt, err)
			}
		}
	}
	if l := s.findLog("taskqueue listening"); l["webhook_secrets"] != float64(2) || strings.Contains(s.logText(), secrets[0][6:]) {
		t.Fatalf("settings line %v (secrets must not be logged)", l["webhook_secrets"])
	}
}

// Metrics scraped during a load run agree with /stats and with the tasks
// run; --metrics-addr serves them without a key; promtool accepts them.
func TestMetricsMatchStatsUnderLoad(t *testing.T) {
	both(t, func(t *testing.T, extra ...string) {
		hook := newReceiver(t, 200, false)
		s, k, _ := startWithKeys(t, append(extra, "--handler", "job="+hook.URL, "--metrics-addr", "127.0.0.1:0", "--workers", "4")...)
		metricsAddr := s.findLog("taskqueue listening")["metrics_addr"].(string)
		spec.watch("http://" + metricsAddr)
		const total = 400
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < total/4; i++ {
					if r := s.rawRequest("POST", "/task", `{"type":"job"}`, bearer(k.submit)); r.status != 202 {
						t.Errorf("submit: %d %s", r.status, r.text)
						return
					}
				}
			}()
		}
		scrapes := 0
		for hook.count() < total {
			m := scrapeMetrics(t, "http://"+metricsAddr+"/metrics", nil)
			if m[`taskqueue_tasks_submitted_total{type="job"}`] > total {
				t.Fatalf("more submitted than sent: %v", m)
			}
			scrapes++
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
		var m map[string]float64
		var st map[string]any
		eventually(t, "every attempt recorded", func() bool {
			st = s.requestWith("GET", "/stats", "", bearer(k.read)).body
			m = scrapeMetrics(t, s.base+"/metrics", bearer(k.read))
			return m[`taskqueue_attempts_finished_total{outcome="succeeded",type="job"}`] == total && st["counts"].(map[string]any)["succeeded"] == float64(total)
		})
		if m[`taskqueue_tasks_submitted_total{type="job"}`] != total || m[`taskqueue_tasks{status="succeeded",type="job"}`] != total ||
			m[`taskqueue_tasks{status="pending",type="job"}`] != 0 || m[`taskqueue_attempt_duration_seconds_count{type="job"}`] != total ||
			m[`taskqueue_attempt_wait_seconds_count{type="job"}`] != total || m[`taskqueue_http_requests_total{code="202",method="POST",route="/task"}`] != total {
			t.Fatalf("after %d scrapes, metrics disagree with %d tasks run: %v", scrapes, total, m)
		}
		if r := s.rawRequest("GET", "/metrics", "", nil); r.status != 401 {
			t.Fatalf("/metrics on --addr without a key: %d", r.status)
		}
		m = scrapeMetrics(t, "http://"+metricsAddr+"/metrics", nil)
		if m[`taskqueue_http_requests_total{code="401",method="GET",route="/metrics"}`] != 1 {
			t.Fatal("a refused request is not counted under its route")
		}
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			if os.Getenv("TASKQUEUE_TEST_PROMTOOL_REQUIRED") != "" {
				t.Fatal("promtool not found (install Debian's prometheus package; .ci/run does)")
			}
			t.Skip("promtool not found: install Debian's prometheus package to check the metrics with it")
		}
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = strings.NewReader(string(body))
		if out, err := check.CombinedOutput(); err != nil {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
	})
}

// scrapeMetrics reads a scrape into series → value (no HELP/TYPE lines).
func scrapeMetrics(t *testing.T, url string, header map[string]string) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d", url, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		fmt.Sscan(line[i+1:], &v)
		out[line[:i]] = v
	}
	return out
}
