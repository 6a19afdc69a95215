// Package httpapi is the REST adapter: it decodes requests, calls the
// ports.TaskService, and maps results and errors to HTTP.
package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// DefaultMaxBodyBytes is the default limit on a request body: 1 MiB.
const DefaultMaxBodyBytes = 1 << 20

// API serves the task queue's REST endpoints.
type API struct {
	svc          ports.TaskService
	maxBodyBytes int64
	healthy      func() bool
	log          logrus.FieldLogger
	router       *mux.Router
}

// Options configure an API.
type Options struct {
	// MaxBodyBytes limits request bodies; larger ones get 413.
	MaxBodyBytes int64
	// Healthy reports whether /healthz answers 200; nil means always.
	Healthy func() bool
}

// New returns the API's handler with every route registered.
func New(svc ports.TaskService, opts Options, log logrus.FieldLogger) *API {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Healthy == nil {
		opts.Healthy = func() bool { return true }
	}
	a := &API{svc: svc, maxBodyBytes: opts.MaxBodyBytes, healthy: opts.Healthy, log: log, router: mux.NewRouter()}
	a.routes()
	return a
}

// routes is the one place every endpoint is declared.
func (a *API) routes() {
	a.router.HandleFunc("/task", a.submit).Methods(http.MethodPost)
	a.router.HandleFunc("/task/{id}", a.get).Methods(http.MethodGet)
	a.router.HandleFunc("/healthz", a.health).Methods(http.MethodGet)
	a.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, &requestError{status: http.StatusNotFound, msg: "no such endpoint: " + r.URL.Path})
	})
	a.router.MethodNotAllowedHandler = http.HandlerFunc(a.methodNotAllowed)
}

// ServeHTTP makes the API an http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.router.ServeHTTP(w, r) }

func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, a.maxBodyBytes)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sub, err := decodeSubmission(body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	task, err := a.svc.Submit(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id := task.ID().String()
	w.Header().Set("Location", "/task/"+id)
	writeJSON(w, http.StatusAccepted, submitResponse{Message: "Task enqueued", ID: id, Status: task.Status().String()})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	raw := mux.Vars(r)["id"]
	id, err := uuid.Parse(raw)
	if err != nil {
		a.fail(w, r, badRequest("id: %q is not a valid task id (expected a UUID)", truncate(raw, 64)))
		return
	}
	task, err := a.svc.Get(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toTaskResponse(task))
}

func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	if !a.healthy() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		var match mux.RouteMatch
		if a.router.Match(probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	a.fail(w, r, &requestError{status: http.StatusMethodNotAllowed, msg: "method " + r.Method + " is not allowed on " + r.URL.Path + "; allowed: " + strings.Join(allowed, ", ")})
}

// fail is the one place errors become responses: it picks the status with
// errors.Is/As, logs client errors at info and internal ones at error,
// and never shows internal details to the client.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var reqErr *requestError
	var validation *domain.ValidationError
	var unknownType *domain.UnknownTypeError
	switch {
	case errors.As(err, &reqErr):
		status, msg = reqErr.status, reqErr.msg
	case errors.As(err, &validation):
		status, msg = http.StatusBadRequest, validation.Error()
	case errors.As(err, &unknownType):
		status, msg = http.StatusBadRequest, unknownType.Error()
	case errors.Is(err, domain.ErrTaskNotFound):
		status, msg = http.StatusNotFound, "task not found"
	case errors.Is(err, domain.ErrQueueFull):
		status, msg = http.StatusServiceUnavailable, "queue is full: too many pending tasks, retry later"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, domain.ErrShuttingDown):
		status, msg = http.StatusServiceUnavailable, "service is shutting down: submit to another instance or retry later"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, domain.ErrUnavailable):
		status, msg = http.StatusServiceUnavailable, "broker is unavailable: retry later"
		if r.Method == http.MethodPost {
			w.Header().Set("Retry-After", "1")
		}
	}
	entry := a.log.WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path, "status": status, "remote": r.RemoteAddr})
	if status == http.StatusInternalServerError {
		entry.WithError(err).Error("request failed")
	} else {
		entry.WithField("error", msg).Info("request rejected")
	}
	writeJSON(w, status, errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
