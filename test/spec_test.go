package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/taskqueue/taskqueue/adapters/httpapi"
)

// specCheck holds the service to its OpenAPI description: every request a
// test sends to a taskqueue server goes through it (it is
// http.DefaultTransport), and every answer is checked against the spec
// served by the binary's own package:
//   - a request the spec allows must get an answer the spec describes
//     for it (status, headers, body);
//   - a request the spec does not allow (the tests send many on purpose)
//     must be refused with a 4xx or 503 that the spec describes;
//   - a path or method the spec does not have must get 401, 404 or 405
//     as a JSON error.
//
// (Request bodies over maxCheckedBody are checked for all but their
// content.)
//
// Mismatches are collected; TestMain fails the run when there are any.
type specCheck struct {
	next   http.RoundTripper
	router routers.Router

	mu       sync.Mutex
	hosts    map[string]bool // taskqueue servers' host:port
	failures map[string]int
	checked  int
}

var spec *specCheck

// maxCheckedBody is the largest request body whose content is checked.
const maxCheckedBody = 64 << 10

func installSpecCheck() error {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(httpapi.Spec)
	if err != nil {
		return fmt.Errorf("openapi.json: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return fmt.Errorf("openapi.json is not a valid OpenAPI document: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return err
	}
	spec = &specCheck{next: http.DefaultTransport, router: router, hosts: map[string]bool{}, failures: map[string]int{}}
	http.DefaultTransport = spec
	return nil
}

// watch adds a taskqueue server's base URL to the hosts checked.
func (c *specCheck) watch(base string) {
	u, err := url.Parse(base)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.hosts[u.Host] = true
	c.mu.Unlock()
}

func (c *specCheck) fail(req *http.Request, status int, format string, args ...any) {
	msg := fmt.Sprintf("%s %s → %d: %s", req.Method, req.URL.Path, status, fmt.Sprintf(format, args...))
	if len(msg) > 600 {
		msg = msg[:600] + "…"
	}
	c.mu.Lock()
	c.failures[msg]++
	c.mu.Unlock()
}

func (c *specCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	watched := c.hosts[req.URL.Host]
	c.mu.Unlock()
	if !watched {
		return c.next.RoundTrip(req)
	}
	var body []byte
	large := req.ContentLength > maxCheckedBody
	if req.Body != nil && !large {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respBody, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if rerr != nil {
		return resp, nil // the test sees the cut body for itself
	}
	c.check(req, body, large, resp, respBody)
	return resp, nil
}

func (c *specCheck) check(req *http.Request, body []byte, large bool, resp *http.Response, respBody []byte) {
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	ctx := context.Background()
	probe := req.Clone(ctx)
	probe.Body = io.NopCloser(bytes.NewReader(body))
	probe.ContentLength = int64(len(body))
	if len(body) > 0 {
		// The service reads every body as JSON whatever its Content-Type
		// says (curl -d sends a form type), as the spec's description says.
		probe.Header.Set("Content-Type", "application/json")
	}
	route, params, err := c.router.FindRoute(probe)
	if err != nil {
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || !bytes.Contains(respBody, []byte(`"error"`)) {
				c.fail(req, resp.StatusCode, "a path or method outside the spec got a non-JSON error: %.200s", respBody)
			}
		default:
			c.fail(req, resp.StatusCode, "the spec has no such operation (%v), but the server answered it", err)
		}
		return
	}
	in := &openapi3filter.RequestValidationInput{
		Request: probe, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true,
			// Holding and checking a 1 MB body takes long under the race
			// detector, enough to change what the flood tests that send
			// them measure: bodies over maxCheckedBody go to the server
			// as they are and are checked for all but their content.
			ExcludeRequestBody: large},
	}
	if reqErr := openapi3filter.ValidateRequest(ctx, in); reqErr != nil {
		if resp.StatusCode < 400 || (resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable) {
			c.fail(req, resp.StatusCode, "the spec does not allow this request (%v), but the server accepted it", reqErr)
			return
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		c.fail(req, resp.StatusCode, "answer does not match the spec: %v", err)
	}
}

// report prints the mismatches and returns how many there were.
func (c *specCheck) report() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	msgs := make([]string, 0, len(c.failures))
	for m, n := range c.failures {
		msgs = append(msgs, fmt.Sprintf("%s (%d times)", m, n))
	}
	sort.Strings(msgs)
	for _, m := range msgs {
		fmt.Fprintln(os.Stderr, "OPENAPI MISMATCH:", m)
	}
	if len(msgs) > 0 {
		fmt.Fprintf(os.Stderr, "%d of the %d exchanges checked against adapters/httpapi/openapi.json did not match it\n", len(msgs), c.checked)
	}
	return len(msgs)
}
