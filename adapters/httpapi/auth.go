package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// openPaths answer without a key: the probes and the API description.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/openapi.json": true}

// realm names the protection space in WWW-Authenticate (RFC 6750).
const realm = `Bearer realm="taskqueue"`

// maxAuthHeader bounds the Authorization header we look at; a key is far
// shorter.
const maxAuthHeader = 512

func rolesOf(ctx context.Context) domain.Roles {
	if c := ports.ClientOf(ctx); c != nil {
		return c.Roles
	}
	return 0
}

// clientName is the request's client name, or "".
func clientName(r *http.Request) string {
	if c := ports.ClientOf(r.Context()); c != nil {
		return c.Name
	}
	return ""
}

// authenticate checks the request's bearer key. On success it returns the
// request with the client's name (ports.WithClient) and roles in its
// context; otherwise it has answered 401 and returns false.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	values := r.Header.Values("Authorization")
	var msg, challenge string
	switch {
	case len(values) == 0:
		msg, challenge = "missing API key: send the header Authorization: Bearer <key>", realm
	case len(values) > 1:
		msg, challenge = "send one Authorization header, got "+strconv.Itoa(len(values)), realm+`, error="invalid_request"`
	case len(values[0]) > maxAuthHeader:
		msg, challenge = "malformed Authorization header: longer than "+strconv.Itoa(maxAuthHeader)+" bytes", realm+`, error="invalid_request"`
	default:
		scheme, key, found := strings.Cut(values[0], " ")
		key = strings.TrimLeft(key, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || key == "" {
			msg, challenge = "malformed Authorization header: want Bearer <key>", realm+`, error="invalid_request"`
			break
		}
		client, ok := a.auth.Authenticate(key)
		if !ok {
			msg, challenge = "invalid API key", realm+`, error="invalid_token"`
			break
		}
		name := client.Name
		r = r.WithContext(ports.WithClient(r.Context(), client))
		if a.debug {
			a.log.WithFields(logrus.Fields{"method": truncate(r.Method, 16), "path": truncate(r.URL.Path, 64), "client": name, "remote": r.RemoteAddr}).Debug("request accepted")
		}
		return r, true
	}
	w.Header().Set("WWW-Authenticate", challenge)
	a.fail(w, r, &requestError{status: http.StatusUnauthorized, msg: msg})
	return r, false
}

// forbidden answers 403 naming the role the route needs.
func (a *API) forbidden(w http.ResponseWriter, r *http.Request, need domain.Role) {
	a.fail(w, r, &requestError{status: http.StatusForbidden,
		msg: "API key " + quoted(clientName(r)) + " lacks the role " + quoted(need.String()) + " needed for " + truncate(r.Method, 16) + " " + quoted(r.URL.Path)})
}

// debugEnabled reports whether log writes debug lines, so a hot path does
// not build one that is thrown away.
func debugEnabled(log logrus.FieldLogger) bool {
	switch l := log.(type) {
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled(logrus.DebugLevel)
	case *logrus.Logger:
		return l.IsLevelEnabled(logrus.DebugLevel)
	}
	return true
}
