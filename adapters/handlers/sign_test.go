package handlers_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/taskqueue/taskqueue/adapters/handlers"
)

// The specification's published example (also the reference libraries'
// TestWebhookSign): this secret, id, timestamp and body sign to this.
func TestSignatureMatchesTheSpecificationVector(t *testing.T) {
	s, err := handlers.NewSigner([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}

func TestBadSecretsAreRefused(t *testing.T) {
	for _, secret := range []string{
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",    // no prefix
		"whsec_not base64!",                   // not base64
		"whsec_c2hvcnQ=",                      // 5 bytes
		"whsec_" + strings.Repeat("QUFB", 30), // 90 bytes
	} {
		if _, err := handlers.NewSigner([]string{secret}, nil); err == nil {
			t.Errorf("secret %q accepted", secret)
		}
	}
}

// Every attempt carries the three headers; the reference Go library
// verifies them with each configured secret (rotation), and webhook-id is
// the task id on every attempt.
func TestSignedCallsVerifyWithTheReferenceLibrary(t *testing.T) {
	secrets := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + strings.Repeat("QUJD", 10)}
	type seen struct {
		header http.Header
		body   []byte
	}
	calls := make(chan seen, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		calls <- seen{r.Header.Clone(), body}
	}))
	defer srv.Close()
	signer, err := handlers.NewSigner(secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	hook := webhook(t, srv.URL).SignWith(signer)
	task := runningTask(t)
	for attempt := 1; attempt <= 2; attempt++ {
		if err := hook.Handle(context.Background(), task); err != nil {
			t.Fatal(err)
		}
		c := <-calls
		if got := c.header.Get("webhook-id"); got != task.ID().String() {
			t.Fatalf("attempt %d: webhook-id %q, want the task id %s", attempt, got, task.ID())
		}
		ts, err := strconv.ParseInt(c.header.Get("webhook-timestamp"), 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Fatalf("webhook-timestamp %q", c.header.Get("webhook-timestamp"))
		}
		if n := len(strings.Fields(c.header.Get("webhook-signature"))); n != 2 {
			t.Fatalf("%d signatures, want one per secret: %q", n, c.header.Get("webhook-signature"))
		}
		for _, secret := range secrets {
			v, err := standardwebhooks.NewWebhook(secret)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify(c.body, c.header); err != nil {
				t.Fatalf("attempt %d: reference library rejects the call for secret %s…: %v", attempt, secret[:10], err)
			}
			tampered := append([]byte{}, c.body...)
			tampered[len(tampered)-2] ^= 1
			if v.Verify(tampered, c.header) == nil {
				t.Fatal("a tampered body verified")
			}
		}
		if c.header.Get("X-Task-Id") != task.ID().String() {
			t.Fatal("X-Task-Id missing")
		}
		if err := task.Release(time.Now(), "again"); err != nil {
			t.Fatal(err)
		}
		if err := task.Start(time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// Unsigned unless asked: no secret, no signature headers.
func TestUnsignedWithoutSecrets(t *testing.T) {
	var h http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h = r.Header.Clone() }))
	defer srv.Close()
	signer, err := handlers.NewSigner(nil, nil)
	if err != nil || signer != nil {
		t.Fatalf("signer %v, err %v", signer, err)
	}
	if err := webhook(t, srv.URL).SignWith(signer).Handle(context.Background(), runningTask(t)); err != nil {
		t.Fatal(err)
	}
	if h.Get("webhook-signature") != "" || h.Get("webhook-id") != "" {
		t.Fatalf("unsigned call carries %v", h)
	}
}
