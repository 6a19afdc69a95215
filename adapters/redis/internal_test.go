package redis

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/test/redisserver"
)

// The sweep looks through every record, so it runs on one instance at a
// time, not on each of them every interval.
func TestSweepRunsOnOneInstanceAtATime(t *testing.T) {
	url := redisserver.URL(t)
	prefix := fmt.Sprintf("tqtest-sweep-%08x", rand.Uint32())
	redisserver.DeleteAfter(t, url, prefix)
	log := logrus.New()
	log.SetOutput(io.Discard)
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	var brokers []*Broker
	for i := 0; i < 3; i++ {
		b, err := New(context.Background(), Options{
			URL: url, Prefix: prefix, Instance: fmt.Sprintf("i%d", i), QueueSize: 10, Lease: time.Second,
			Policy: policy, SweepInterval: 100 * time.Millisecond, Log: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		brokers = append(brokers, b)
	}
	time.Sleep(2 * time.Second) // twenty intervals; the count is what is asserted
	total := int64(0)
	for _, b := range brokers {
		b.Close(context.Background())
		total += b.sweeps.Load()
	}
	// One sweep per interval in all, give or take timer jitter; without
	// the lock each instance would sweep every interval (60).
	if total < 10 || total > 26 {
		t.Fatalf("%d sweeps by three instances in twenty intervals; want about twenty", total)
	}
}

// A renewal that runs just after its attempt was settled (before the
// instance forgot the attempt) must not report the lease as lost: that
// warning is for attempts another instance took over.
func TestRenewAfterSettleIsNotALostLease(t *testing.T) {
	url := redisserver.URL(t)
	prefix := fmt.Sprintf("tqtest-renew-%08x", rand.Uint32())
	redisserver.DeleteAfter(t, url, prefix)
	log, hook := test.NewNullLogger()
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	b, err := New(context.Background(), Options{URL: url, Prefix: prefix, QueueSize: 10, Lease: time.Hour, Retention: time.Hour, Policy: policy, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx := context.Background()
	p, _ := domain.ParsePriority(0)
	task, _ := domain.NewTask(uuid.Must(uuid.NewV7()), "t", []byte(`{}`), p, 0, time.Now())
	if err := b.Enqueue(ctx, task); err != nil {
		t.Fatal(err)
	}
	runningAtt, err := b.Dequeue(ctx)
	running := runningAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	_ = running.Succeed(time.Now())
	b.mu.Lock()
	h := b.held[running.ID()]
	b.mu.Unlock()
	// The settle lands in Redis; the renewal runs before Settle's caller
	// forgets the attempt.
	if err := b.settle(ctx, running, h, "", true); err != nil {
		t.Fatal(err)
	}
	b.renew()
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "lease lost") {
			t.Fatalf("a settled attempt was reported as a lost lease: %v", e.Message)
		}
	}
	// A settle retried after a lost reply is told its outcome landed.
	if err := b.settle(ctx, running, h, "", true); err != nil {
		t.Fatalf("settle retried after it landed: %v", err)
	}
}
