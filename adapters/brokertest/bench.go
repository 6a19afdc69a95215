package brokertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// BenchmarkListAt1M reads one page of 50 tasks, newest first, from b, which
// must take a million tasks (it stores them, pending, of five types, in
// batches of 1000): from the top, from a cursor in the middle, and for one
// status and type.
func BenchmarkListAt1M(bm *testing.B, b ports.Broker) {
	const stored = 1_000_000
	ctx := context.Background()
	p, _ := domain.ParsePriority(0)
	var middle uuid.UUID
	batch := make([]*domain.Task, 0, 1000)
	for i := 0; i < stored; i++ {
		t, err := domain.NewTask(uuid.Must(uuid.NewV7()), fmt.Sprintf("type%d", i%5), []byte(`{}`), p, 0, time.Now())
		if err != nil {
			bm.Fatal(err)
		}
		batch = append(batch, t)
		if i == stored/2 {
			middle = t.ID()
		}
		if len(batch) == cap(batch) {
			if err := b.Enqueue(ctx, batch...); err != nil {
				bm.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for _, tc := range []struct {
		name   string
		filter ports.ListFilter
		after  uuid.UUID
	}{
		{"all", ports.ListFilter{}, uuid.Nil},
		{"all-from-middle", ports.ListFilter{}, middle},
		{"pending-of-one-type", ports.ListFilter{Statuses: []domain.Status{domain.StatusPending}, Types: []string{"type3"}}, middle},
	} {
		bm.Run(tc.name, func(bm *testing.B) {
			for i := 0; i < bm.N; i++ {
				page, err := b.List(ctx, tc.filter, tc.after, 50)
				if err != nil || len(page.Tasks) != 50 {
					bm.Fatalf("%d tasks, %v", len(page.Tasks), err)
				}
			}
		})
	}
}
