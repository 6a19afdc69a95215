package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/taskqueue/taskqueue/ports"
)

// idempotencyHeader is the IETF draft's request header; replayedHeader
// marks a replayed response.
const (
	idempotencyHeader = "Idempotency-Key"
	replayedHeader    = "Idempotent-Replayed"
	maxIdempotencyKey = 255
)

// storedResponse is what an idempotency key keeps of the first response,
// to send it again.
type storedResponse struct {
	Status   int             `json:"s"`
	Location string          `json:"l,omitempty"`
	Body     json.RawMessage `json:"b"`
}

func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	a.withBody(w, r, func(body []byte) {
		sub, err := decodeSubmission(body)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		a.respond(w, r, func() string { return fingerprint("POST /task", sub) }, func() (storedResponse, error) {
			task, err := a.svc.Submit(r.Context(), sub)
			if err != nil {
				return storedResponse{}, err
			}
			id := task.ID().String()
			b, _ := json.Marshal(submitResponse{Message: "Task enqueued", ID: id, Status: task.Status().String()})
			return storedResponse{Status: http.StatusAccepted, Location: "/task/" + id, Body: b}, nil
		})
	})
}

func (a *API) submitBatch(w http.ResponseWriter, r *http.Request) {
	a.withBody(w, r, func(body []byte) {
		subs, err := decodeBatch(body)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		a.respond(w, r, func() string { return fingerprint("POST /tasks", subs...) }, func() (storedResponse, error) {
			tasks, err := a.svc.SubmitBatch(r.Context(), subs)
			if err != nil {
				return storedResponse{}, err
			}
			ids := make([]string, len(tasks))
			for i, t := range tasks {
				ids[i] = t.ID().String()
			}
			b, _ := json.Marshal(batchResponse{Message: "Tasks enqueued", IDs: ids})
			return storedResponse{Status: http.StatusAccepted, Body: b}, nil
		})
	})
}

// withBody reads the request body under the in-flight budget and the
// size limit, and passes it on.
func (a *API) withBody(w http.ResponseWriter, r *http.Request, next func(body []byte)) {
	size := a.maxBodyBytes
	if r.ContentLength >= 0 && r.ContentLength < size {
		size = r.ContentLength
	}
	if !a.inflight.take(size) {
		a.fail(w, r, errBusy)
		return
	}
	defer a.inflight.give(size)
	body, err := readBody(w, r, a.maxBodyBytes)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	next(body)
}

// respond runs a submission and writes its response. With an
// Idempotency-Key it runs at most once per key: a repeat with the same
// request gets the first response again, marked Idempotent-Replayed.
func (a *API) respond(w http.ResponseWriter, r *http.Request, fp func() string, run func() (storedResponse, error)) {
	keys := r.Header.Values(idempotencyHeader)
	if len(keys) == 0 {
		resp, err := run()
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeStored(w, resp, false)
		return
	}
	if err := validIdempotencyKey(keys); err != nil {
		a.fail(w, r, err)
		return
	}
	// Keys are scoped per client: two clients using the same key do not
	// collide. Client names cannot hold the separator (0x1f), nor can
	// keys, so scopes cannot overlap.
	key := keys[0]
	if client := clientName(r); client != "" {
		key = client + "\x1f" + key
	}
	raw, replayed, err := a.svc.Idempotent(r.Context(), key, fp(), func() ([]byte, error) {
		resp, err := run()
		if err != nil {
			return nil, err
		}
		return json.Marshal(resp)
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var resp storedResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		a.fail(w, r, err)
		return
	}
	writeStored(w, resp, replayed)
}

func writeStored(w http.ResponseWriter, resp storedResponse, replayed bool) {
	if resp.Location != "" {
		w.Header().Set("Location", resp.Location)
	}
	if replayed {
		w.Header().Set(replayedHeader, "true")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
	_, _ = w.Write([]byte("\n"))
}

// validIdempotencyKey checks the header: one value of 1 to 255 printable
// ASCII characters.
func validIdempotencyKey(values []string) error {
	if len(values) > 1 {
		return badRequest("%s: give one key, got %d", idempotencyHeader, len(values))
	}
	k := values[0]
	if len(k) == 0 || len(k) > maxIdempotencyKey {
		return badRequest("%s: must be 1 to %d printable ASCII characters, got %d", idempotencyHeader, maxIdempotencyKey, len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return badRequest("%s: must be printable ASCII characters, found byte 0x%02x at position %d", idempotencyHeader, k[i], i+1)
		}
	}
	return nil
}

// fingerprint identifies a request by what it asks, not by its bytes: the
// decoded submissions (payloads compacted), so the same request sent with
// other whitespace or key order is the same request.
func fingerprint(endpoint string, subs ...ports.Submission) string {
	h := sha256.New()
	h.Write([]byte(endpoint))
	var buf bytes.Buffer
	for _, s := range subs {
		buf.Reset()
		_ = json.Compact(&buf, s.Payload)
		runAt := ""
		if !s.RunAt.IsZero() {
			runAt = s.RunAt.UTC().Format(time.RFC3339Nano)
		}
		for _, part := range []string{s.Type, strconv.Itoa(s.Priority), strconv.Itoa(s.MaxRetries), runAt, s.Delay.String(), s.Key} {
			h.Write([]byte{0})
			h.Write([]byte(part))
		}
		h.Write([]byte{0})
		h.Write(buf.Bytes())
	}
	return hex.EncodeToString(h.Sum(nil))
}
