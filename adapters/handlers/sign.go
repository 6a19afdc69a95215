package handlers

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com) headers.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// SecretPrefix starts every webhook signing secret.
const SecretPrefix = "whsec_"

// Secret lengths the Standard Webhooks specification allows, in bytes.
const (
	minSecretBytes = 24
	maxSecretBytes = 64
)

// Signer signs webhook calls as the Standard Webhooks specification says:
// webhook-signature holds "v1,<base64 HMAC-SHA256 of id.timestamp.body>"
// for each secret, space-separated, so a receiver can rotate secrets
// (accept the old and the new one while both are configured).
type Signer struct {
	keys [][]byte
	now  func() time.Time
}

// ParseSecret decodes a secret written as the specification shows them:
// "whsec_" then the key in standard base64, 24 to 64 bytes.
func ParseSecret(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("a webhook secret must start with %q (then the key in base64)", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("a webhook secret must be %q then the key in standard base64: %v", SecretPrefix, err)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return nil, fmt.Errorf("a webhook secret's key must be %d to %d bytes, got %d", minSecretBytes, maxSecretBytes, len(key))
	}
	return key, nil
}

// NewSigner returns a signer for the given secrets (see ParseSecret), or
// nil when there are none.
func NewSigner(secrets []string, now func() time.Time) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	if now == nil {
		now = time.Now
	}
	s := &Signer{now: now}
	for _, secret := range secrets {
		key, err := ParseSecret(secret)
		if err != nil {
			return nil, err
		}
		s.keys = append(s.keys, key)
	}
	return s, nil
}

// Signature returns the webhook-signature value for a message.
func (s *Signer) Signature(id string, timestamp int64, body []byte) string {
	var b strings.Builder
	for i, key := range s.keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
		mac.Write([]byte{'.'})
		mac.Write(body)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return b.String()
}

// sign sets the three headers on a request whose body is body.
func (s *Signer) sign(h http.Header, id string, body []byte) {
	ts := s.now().Unix()
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderWebhookSignature, s.Signature(id, ts, body))
}
