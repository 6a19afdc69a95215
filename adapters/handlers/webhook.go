package handlers

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// ErrorBodyBytes is how much of a failing webhook's response body goes
// into the attempt's error: handlers explain themselves there.
const ErrorBodyBytes = 512

// Webhook runs an attempt by POSTing the task to a URL. The attempt
// succeeds only if a 2xx status and the whole response body arrive within
// the attempt's deadline; anything else fails it. A receiver can push
// back: 429 or 503 with Retry-After (seconds or an HTTP date) puts the
// next attempt no sooner than that (capped by the retry policy's
// maximum); X-Task-No-Retry: true on any other status than 2xx fails the
// task for good. Errors name the task
// type and what went wrong, never the URL (it may name internal hosts and
// carry secrets in its query). Redirects are not followed, so a payload
// only goes where the operator pointed it. With SignWith, calls are signed
// as the Standard Webhooks specification says.
type Webhook struct {
	taskType  string
	url       string
	client    *http.Client
	maxResult int
	now       func() time.Time // reads Retry-After dates
	signer    *Signer          // nil: calls are not signed
}

var _ ports.ResultHandler = (*Webhook)(nil)

type webhookBody struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	Attempt int             `json:"attempt"`
}

// NewWebhook returns a handler for tasks of taskType posting to rawURL,
// which must be an absolute http or https URL. client may be nil for
// NewHTTPClient(0). A 2xx JSON reply body is the attempt's result, read up
// to maxResult bytes (domain.DefaultMaxResultBytes when 0; past it the
// result is cut and flagged). Its error shows the URL redacted.
func NewWebhook(taskType, rawURL string, client *http.Client, maxResult int) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook URL %q must be an absolute http:// or https:// URL", RedactURL(rawURL))
	}
	if client == nil {
		client = NewHTTPClient(0)
	}
	if maxResult <= 0 {
		maxResult = domain.DefaultMaxResultBytes
	}
	return &Webhook{taskType: taskType, url: u.String(), client: client, maxResult: maxResult, now: time.Now}, nil
}

// SignWith makes every call carry Standard Webhooks signature headers
// (webhook-id: the task id, the same on every attempt; webhook-timestamp;
// webhook-signature) made with s; nil leaves calls unsigned. It returns w.
func (w *Webhook) SignWith(s *Signer) *Webhook {
	w.signer = s
	return w
}

// RedactURL returns rawURL fit for a log line: its password and the
// values of its query replaced by "xxxxx". An unparsable URL gives a
// placeholder.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := u.Query(); len(q) > 0 {
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// NewHTTPClient returns a client for webhooks that keeps up to
// idlePerHost connections open per host and never follows redirects.
// Timeouts come from each attempt's context.
func NewHTTPClient(idlePerHost int) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if idlePerHost > 0 {
		transport.MaxIdleConnsPerHost = idlePerHost
		transport.MaxIdleConns = 0 // no global cap; the per-host one bounds it
	}
	return &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Handle posts the task and reports the reply; see the type comment.
func (w *Webhook) Handle(ctx context.Context, task *domain.Task) error {
	_, err := w.HandleResult(ctx, task)
	return err
}

// HandleResult posts the task and returns the reply's JSON body as the
// result; see the type comment.
func (w *Webhook) HandleResult(ctx context.Context, task *domain.Task) ([]byte, error) {
	payload := task.Payload()
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	body, err := json.Marshal(webhookBody{ID: task.ID().String(), Type: task.Type(), Payload: payload, Attempt: task.Attempts()})
	if err != nil {
		return nil, fmt.Errorf("webhook for type %q: encode body: %w", w.taskType, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("webhook for type %q: build request: %s", w.taskType, reason(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Task-Id", task.ID().String())
	req.Header.Set("X-Task-Attempt", strconv.Itoa(task.Attempts()))
	if w.signer != nil {
		w.signer.sign(req.Header, task.ID().String(), body)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("webhook for type %q unreachable: %s", w.taskType, reason(err))
	}
	defer resp.Body.Close()
	// Read the whole body under the attempt's deadline: a reply is only a
	// success once it has fully arrived. Keep its start: the result of a
	// success (one byte past the limit shows it was cut), the explanation
	// of a failure.
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	keep := ErrorBodyBytes
	if ok {
		keep = w.maxResult + 1
	}
	head := make([]byte, 0, min(keep, 4096))
	_, err = io.Copy(io.Discard, &capture{r: resp.Body, head: &head, max: keep})
	var fail error
	switch {
	case err != nil:
		fail = fmt.Errorf("webhook for type %q returned %d but its response body did not arrive whole: %s", w.taskType, resp.StatusCode, reason(err))
	case !ok && len(head) > 0:
		fail = fmt.Errorf("webhook for type %q returned %d: %s", w.taskType, resp.StatusCode, printable(head))
	case !ok:
		fail = fmt.Errorf("webhook for type %q returned %d", w.taskType, resp.StatusCode)
	}
	if fail != nil {
		return nil, w.backpressure(resp, fail)
	}
	if len(head) > w.maxResult || json.Valid(head) || isJSON(resp.Header.Get("Content-Type")) {
		return head, nil
	}
	return nil, nil // a body that is not JSON is not a result
}

// NoRetryHeader is the response header by which a webhook that fails an
// attempt asks for no more attempts.
const NoRetryHeader = "X-Task-No-Retry"

// backpressure wraps a failed call's error in what the receiver asked
// for: no more attempts (NoRetryHeader: true, any status but 2xx), or
// none before Retry-After (on 429 and 503).
func (w *Webhook) backpressure(resp *http.Response, fail error) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if strings.EqualFold(strings.TrimSpace(resp.Header.Get(NoRetryHeader)), "true") {
			return &domain.NoRetryError{Err: fail}
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if after, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), w.now()); ok {
			return &domain.RetryAfterError{After: after, Err: fmt.Errorf("%w (Retry-After: %s)", fail, after)}
		}
	}
	return fail
}

// maxRetryAfter bounds what a Retry-After can ask for before the retry
// policy's own cap applies (and keeps the arithmetic from overflowing).
const maxRetryAfter = 366 * 24 * time.Hour

// ParseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date
// (RFC 9110, section 10.2.3), as a wait from now: a date in the past is
// no wait. It reports false for a value that is neither.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(maxRetryAfter/time.Second) { // err: too many digits
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	if len(v) > 64 {
		return 0, false
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(at.Sub(now), 0), maxRetryAfter), true
}

// isJSON reports whether a Content-Type names JSON.
func isJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// capture passes r through, keeping its first max bytes in head.
type capture struct {
	r    io.Reader
	head *[]byte
	max  int
}

func (c *capture) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if room := c.max - len(*c.head); room > 0 {
		*c.head = append(*c.head, p[:min(n, room)]...)
	}
	return n, err
}

// printable returns b as text for an error message: invalid UTF-8 (or a
// character cut at the end) replaced.
func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return string(bytes.ToValidUTF8(b, []byte("\uFFFD")))
}

// reason says what went wrong with a webhook call in words that name no
// host, port or URL.
func reason(err error) string {
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "host not found"
	case errors.As(err, &dns):
		return "DNS lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset by the server"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before the whole response arrived (unexpected EOF)"
	case errors.Is(err, io.EOF):
		return "connection closed by the server before it answered"
	case errors.As(err, &unknownCA):
		return "TLS: certificate signed by an unknown authority"
	case errors.As(err, &hostname):
		return "TLS: certificate is not valid for the host"
	case errors.As(err, &invalid):
		return "TLS: certificate is not valid"
	case errors.As(err, &record), errors.As(err, &alert):
		return "TLS handshake failed"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	}
	return "request failed"
}
