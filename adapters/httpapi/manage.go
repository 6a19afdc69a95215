package httpapi

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// listParams are the query parameters GET /tasks accepts.
var listParams = map[string]bool{"status": true, "type": true, "limit": true, "cursor": true}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		a.fail(w, r, badRequest("query: %s is not a valid query string", quoted(r.URL.RawQuery)))
		return
	}
	filter, after, limit, err := decodeListQuery(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page, err := a.svc.List(r.Context(), filter, after, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := listResponse{Tasks: make([]taskResponse, len(page.Tasks))}
	for i, t := range page.Tasks {
		out.Tasks[i] = toTaskResponse(t, false)
	}
	if page.Next != uuid.Nil {
		out.NextCursor = base64.RawURLEncoding.EncodeToString(page.Next[:])
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeListQuery parses ?status=&type=&limit=&cursor=; status and type
// may repeat or hold comma-separated values.
func decodeListQuery(q url.Values) (ports.ListFilter, uuid.UUID, int, error) {
	var f ports.ListFilter
	for name := range q {
		if !listParams[name] {
			return f, uuid.Nil, 0, badRequest("unknown query parameter %s: allowed are status, type, limit, cursor", quoted(name))
		}
	}
	for _, v := range splitValues(q["status"]) {
		s, err := domain.ParseStatus(v)
		if err != nil {
			return f, uuid.Nil, 0, badRequest("status: %s is not a status (one of scheduled, pending, running, retrying, succeeded, failed, cancelled)", quoted(v))
		}
		f.Statuses = append(f.Statuses, s)
	}
	for _, v := range splitValues(q["type"]) {
		if err := domain.ValidateType(v); err != nil {
			return f, uuid.Nil, 0, err
		}
		f.Types = append(f.Types, v)
	}
	limit := 0
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > ports.MaxListLimit {
			return f, uuid.Nil, 0, badRequest("limit: must be an integer from 1 to %d, got %s", ports.MaxListLimit, quoted(raw))
		}
		limit = n
	}
	after := uuid.Nil
	if raw := q.Get("cursor"); raw != "" {
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) != 16 {
			return f, uuid.Nil, 0, badRequest("cursor: %s is not a cursor from a previous page", quoted(raw))
		}
		copy(after[:], b)
	}
	return f, after, limit, nil
}

func splitValues(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request) {
	a.change(w, r, a.svc.Cancel)
}

func (a *API) retry(w http.ResponseWriter, r *http.Request) {
	a.change(w, r, a.svc.Retry)
}

// change runs a change of one task and answers 200 with the task.
func (a *API) change(w http.ResponseWriter, r *http.Request, do func(ctx context.Context, id uuid.UUID) (*domain.Task, error)) {
	id, err := pathID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	task, err := do(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toTaskResponse(task, true))
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.svc.Delete(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) retryMany(w http.ResponseWriter, r *http.Request) {
	a.withBody(w, r, func(body []byte) {
		status, typ, err := decodeRetry(body)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		n, err := a.svc.RetryMany(r.Context(), status, typ)
		if err != nil && n == 0 {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, retriedResponse{Retried: n})
	})
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Stats(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toStatsResponse(st, time.Now()))
}

func (a *API) types(w http.ResponseWriter, r *http.Request) {
	infos, err := a.svc.Types(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toTypesResponse(infos))
}

// pause and resume answer 200 with the type's new state; both are
// idempotent.
func (a *API) pause(w http.ResponseWriter, r *http.Request) {
	typ := mux.Vars(r)["type"]
	if err := a.svc.Pause(r.Context(), typ); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, pausedResponse{Type: typ, Paused: true})
}

func (a *API) resume(w http.ResponseWriter, r *http.Request) {
	typ := mux.Vars(r)["type"]
	if err := a.svc.Resume(r.Context(), typ); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, pausedResponse{Type: typ, Paused: false})
}
