package application

import (
	"context"
	"fmt"
	"time"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// idempotencyHold is how long a request may hold its idempotency key
// before another request with it may run (the first is presumed lost).
const idempotencyHold = time.Minute

// Idempotent runs request at most once per key; see ports.TaskSubmitter.
func (s *Service) Idempotent(ctx context.Context, key, fingerprint string, request func() ([]byte, error)) ([]byte, bool, error) {
	rec, claimed, err := s.broker.Reserve(ctx, key, fingerprint, idempotencyHold)
	if err != nil {
		return nil, false, fmt.Errorf("idempotency key: %w", err)
	}
	if !claimed {
		switch {
		case rec.Fingerprint != fingerprint:
			return nil, false, domain.ErrIdempotencyKeyReused
		case !rec.Done:
			return nil, false, domain.ErrIdempotencyInFlight
		}
		return rec.Response, true, nil
	}
	detached := context.WithoutCancel(ctx)
	response, err := request()
	if err != nil {
		if rerr := s.broker.Release(detached, key); rerr != nil {
			s.logFor(ctx).WithError(rerr).Warn("cannot free an idempotency key after its request failed; it frees itself when its hold runs out")
		}
		return nil, false, err
	}
	if err := s.broker.Complete(detached, key, ports.IdempotencyRecord{Fingerprint: fingerprint, Done: true, Response: response}, s.cfg.IdempotencyTTL); err != nil {
		// The request ran; only its replay is lost. A repeat after the hold
		// runs out would run it again.
		s.logFor(ctx).WithError(err).Warn("cannot store the response of an idempotent request; a repeat within the key's window gets 409 until its hold runs out, then runs again")
	}
	return response, false, nil
}
