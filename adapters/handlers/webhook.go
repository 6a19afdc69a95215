package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Webhook runs an attempt by POSTing the task to a URL. A 2xx reply is
// success; anything else, a connection error or a timeout is a failure.
// Redirects are not followed, so a payload only goes where the operator
// pointed it.
type Webhook struct {
	url    string
	client *http.Client
}

var _ ports.Handler = (*Webhook)(nil)

type webhookBody struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	Attempt int             `json:"attempt"`
}

// NewWebhook returns a handler posting to rawURL, which must be an
// absolute http or https URL. client may be nil for NewHTTPClient(0).
func NewWebhook(rawURL string, client *http.Client) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook URL %q must be an absolute http:// or https:// URL", rawURL)
	}
	if client == nil {
		client = NewHTTPClient(0)
	}
	return &Webhook{url: u.String(), client: client}, nil
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
	payload := task.Payload()
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	body, err := json.Marshal(webhookBody{ID: task.ID().String(), Type: task.Type(), Payload: payload, Attempt: task.Attempts()})
	if err != nil {
		return fmt.Errorf("encode webhook body: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Task-Id", task.ID().String())
	req.Header.Set("X-Task-Attempt", strconv.Itoa(task.Attempts()))
	resp, err := w.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("webhook timed out: %w", err)
		}
		return fmt.Errorf("webhook request failed: %w", err)
	}
	// Drain a little so the connection can be reused, then close.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook returned %d", resp.StatusCode)
	}
	return nil
}
