// Package httpapi is the REST adapter: it decodes requests, calls the
// ports.TaskService, and maps results and errors to HTTP.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// DefaultMaxBodyBytes is the default limit on a request body: 1 MiB.
const DefaultMaxBodyBytes = 1 << 20

// readyTimeout bounds the broker check behind /readyz.
const readyTimeout = 2 * time.Second

// API serves the task queue's REST endpoints.
type API struct {
	svc          ports.TaskService
	maxBodyBytes int64
	inflight     *byteBudget
	auth         Authenticator
	metrics      http.Handler
	observe      func(route, method string, status int, d time.Duration)
	log          logrus.FieldLogger
	debug        bool
	warn         *limitedLog
	router       *mux.Router
	needs        map[string]domain.Role // "METHOD /path" → the role it needs (0: open)
}

// Options configure an API.
type Options struct {
	// MaxBodyBytes limits request bodies; larger ones get 413.
	MaxBodyBytes int64
	// MaxInflightBodyBytes bounds the request bodies being read and
	// decoded at once (each counted as its Content-Length, or
	// MaxBodyBytes when unknown); past it a submission gets 503 with
	// Retry-After. Defaults to 32 × MaxBodyBytes.
	MaxInflightBodyBytes int64
	// Auth authenticates clients by their bearer key; nil leaves the API
	// open to anyone who can reach it.
	Auth Authenticator
	// Metrics is served at GET /metrics (role read); nil: no such route.
	Metrics http.Handler
	// Observe, when set, is told of every request once answered: the
	// route's pattern (such as /task/{id}; "unmatched" for none), the
	// method, the status and how long it took.
	Observe func(route, method string, status int, d time.Duration)
}

// Authenticator finds the client a bearer key belongs to.
type Authenticator interface {
	// Authenticate returns the key's client (name and roles), or false
	// for an unknown key. The client is not changed afterwards.
	Authenticate(key string) (*ports.Client, bool)
}

// New returns the API's handler with every route registered.
func New(svc ports.TaskService, opts Options, log logrus.FieldLogger) *API {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxInflightBodyBytes <= 0 {
		opts.MaxInflightBodyBytes = 32 * opts.MaxBodyBytes
	}
	a := &API{svc: svc, maxBodyBytes: opts.MaxBodyBytes, inflight: &byteBudget{limit: opts.MaxInflightBodyBytes},
		auth: opts.Auth, metrics: opts.Metrics, observe: opts.Observe,
		log: log, debug: debugEnabled(log), warn: newLimitedLog(log, 5*time.Second, time.Now), router: mux.NewRouter(),
		needs: map[string]domain.Role{}}
	a.routes()
	return a
}

// routes is the one place every endpoint is declared. Every GET route also
// answers HEAD (the same headers, no body), as probes and load balancers
// expect.
func (a *API) routes() {
	// Paths are matched as sent: the router's own answer to a path with
	// "..", "//" or the like would be an empty 301.
	a.router.SkipClean(true)
	get := []string{http.MethodGet, http.MethodHead}
	post := []string{http.MethodPost}
	submit, read, admin, open := domain.RoleSubmit, domain.RoleRead, domain.RoleAdmin, domain.Role(0)
	a.handle("/task", submit, a.submit, post)
	a.handle("/tasks", submit, a.submitBatch, post)
	a.handle("/tasks", read, a.list, get)
	a.handle("/tasks/retry", admin, a.retryMany, post)
	a.handle("/task/{id}", read, a.get, get)
	a.handle("/task/{id}", admin, a.delete, []string{http.MethodDelete})
	a.handle("/task/{id}/cancel", admin, a.cancel, post)
	a.handle("/task/{id}/retry", admin, a.retry, post)
	a.handle("/stats", read, a.stats, get)
	a.handle("/types", read, a.types, get)
	a.handle("/types/{type}/pause", admin, a.pause, post)
	a.handle("/types/{type}/resume", admin, a.resume, post)
	if a.metrics != nil {
		a.handle("/metrics", read, a.metrics.ServeHTTP, get)
	}
	a.handle("/healthz", open, a.health, get)
	a.handle("/readyz", open, a.ready, get)
	a.handle("/openapi.json", open, serveSpec, get)
	a.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, &requestError{status: http.StatusNotFound, msg: "no such endpoint: " + quoted(r.URL.Path)})
	})
	a.router.MethodNotAllowedHandler = http.HandlerFunc(a.methodNotAllowed)
}

// ServeHTTP makes the API an http.Handler: it authenticates the request
// (unless the API is open or the path is one of openPaths), then routes
// it; the route checks the client's role.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.observe != nil {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK, route: "unmatched"}
		w = rec
		defer func() { a.observe(rec.route, r.Method, rec.status, time.Since(start)) }()
	}
	if r.Method == http.MethodConnect {
		a.fail(w, r, badRequest("method CONNECT is not supported: this is not a proxy"))
		return
	}
	if a.auth != nil && !openPaths[r.URL.Path] {
		var ok bool
		if r, ok = a.authenticate(w, r); !ok {
			if rec, isRec := w.(*recorder); isRec {
				// Count the refusal under the route it was meant for.
				var match mux.RouteMatch
				if a.router.Match(r, &match) && match.Route != nil {
					rec.route, _ = match.Route.GetPathTemplate()
				}
			}
			return
		}
	}
	a.router.ServeHTTP(w, r)
}

// handle registers a route that needs role need (0: open to anyone).
func (a *API) handle(path string, need domain.Role, h http.HandlerFunc, methods []string) {
	for _, m := range methods {
		a.needs[m+" "+path] = need
	}
	a.router.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.route = path
		}
		if need != 0 && a.auth != nil && !rolesOf(r.Context()).Allows(need) {
			a.forbidden(w, r, need)
			return
		}
		h(w, r)
	}).Methods(methods...)
}

// recorder remembers a response's status and the route that answered.
type recorder struct {
	http.ResponseWriter
	status int
	route  string
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	task, err := a.svc.Get(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toTaskResponse(task, true))
}

// pathID returns the task id of the path, or a 400 naming it.
func pathID(r *http.Request) (uuid.UUID, error) {
	raw := mux.Vars(r)["id"]
	id, err := uuid.Parse(raw)
	if err != nil {
		return uuid.Nil, badRequest("id: %s is not a valid task id (expected a UUID)", quoted(raw))
	}
	return id, nil
}

// health is liveness: 200 while the process can answer at all.
func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// ready is readiness: 200 when this instance can take and store tasks, 503
// with the reason otherwise (draining, broker unreachable).
func (a *API) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := a.svc.Ready(ctx); err != nil {
		reason := "broker is unavailable"
		switch {
		case errors.Is(err, domain.ErrShuttingDown):
			reason = "shutting down"
		case errors.Is(err, domain.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
			a.warn.log("ready", logrus.Fields{"error": err.Error()}, "not ready: the broker cannot be reached")
		default:
			a.log.WithError(err).Error("readiness check failed")
			reason = "internal error"
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if a.router.Match(probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	a.fail(w, r, &requestError{status: http.StatusMethodNotAllowed,
		msg: "method " + quoted(r.Method) + " is not allowed on " + quoted(r.URL.Path) + "; allowed: " + strings.Join(allowed, ", ")})
}

// statusClientGone is logged (never sent) when the client went away
// before its answer was ready: nginx's 499.
const statusClientGone = 499

// fail is the one place errors become responses: it picks the status with
// errors.Is/As and never shows internal details to the client. Client
// errors log at debug (a polling client cannot flood the log); a broker
// that is away or full, or a full queue, logs a warning with its cause at
// most once per interval; internal errors log at error.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var reqErr *requestError
	var validation *domain.ValidationError
	var unknownType *domain.UnknownTypeError
	var itemErr *domain.ItemError
	warnKey := ""
	switch {
	case errors.As(err, &reqErr):
		status, msg = reqErr.status, reqErr.msg
	case errors.As(err, &itemErr):
		status, msg = http.StatusBadRequest, itemErr.Error()
	case errors.As(err, &validation):
		status, msg = http.StatusBadRequest, validation.Error()
	case errors.As(err, &unknownType):
		status, msg = http.StatusBadRequest, unknownType.Error()
	case errors.Is(err, domain.ErrTaskNotFound):
		status, msg = http.StatusNotFound, "task not found"
	case errors.Is(err, domain.ErrInvalidTransition):
		status, msg = http.StatusConflict, err.Error()
		var te *domain.TransitionError
		if errors.As(err, &te) {
			msg = te.Error()
		}
	case errors.Is(err, domain.ErrIdempotencyKeyReused):
		status, msg = http.StatusUnprocessableEntity, "Idempotency-Key "+quoted(r.Header.Get(idempotencyHeader))+" was already used with a different request"
	case errors.Is(err, domain.ErrIdempotencyInFlight):
		status, msg = http.StatusConflict, "a request with Idempotency-Key "+quoted(r.Header.Get(idempotencyHeader))+" is still being processed: retry later"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, domain.ErrQueueFull):
		status, msg, warnKey = http.StatusServiceUnavailable, "queue is full: too many tasks waiting to run, retry later", "queue full"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, domain.ErrStorageFull):
		status, msg, warnKey = http.StatusServiceUnavailable, "broker storage is full: retry later", "storage full"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, errBusy):
		status, msg, warnKey = http.StatusServiceUnavailable, "too many request bodies in flight: retry later", "busy"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, domain.ErrShuttingDown):
		status, msg = http.StatusServiceUnavailable, "service is shutting down: submit to another instance or retry later"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, domain.ErrUnavailable):
		status, msg, warnKey = http.StatusServiceUnavailable, "broker is unavailable: retry later", "unavailable"
		if r.Method == http.MethodPost {
			w.Header().Set("Retry-After", "1")
		}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		a.entry(r, statusClientGone).WithField("error", err.Error()).Debug("client went away before its answer was ready")
		return
	}
	switch {
	case status == http.StatusInternalServerError:
		a.entry(r, status).WithError(err).Error("request failed")
	case warnKey != "":
		fields := requestFields(r, status)
		fields["error"] = err.Error()
		a.warn.log(warnKey, fields, "refusing requests: "+warnKey)
	default:
		a.entry(r, status).WithField("error", msg).Debug("request rejected")
	}
	writeJSON(w, status, errorResponse{Error: msg})
}

// entry is a log entry for r; see requestFields.
func (a *API) entry(r *http.Request, status int) logrus.FieldLogger {
	return a.log.WithFields(requestFields(r, status))
}

// requestFields describes r for a log line, with anything echoed from the
// request cut short.
func requestFields(r *http.Request, status int) logrus.Fields {
	f := logrus.Fields{"method": truncate(r.Method, 16), "path": truncate(r.URL.Path, 64), "status": status, "remote": r.RemoteAddr}
	if c := clientName(r); c != "" {
		f["client"] = c
	}
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// quoted echoes a client's string in a message: cut to 64 characters and
// quoted.
func quoted(s string) string { return strconv.Quote(truncate(s, 64)) }
