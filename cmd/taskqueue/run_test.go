package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/test/redisserver"
)

// A start-up step that fails after the broker was opened (here: the port
// is taken) closes the broker before returning.
func TestFailedStartClosesTheBroker(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, broker := range []string{brokerMemory, brokerRedis} {
		t.Run(broker, func(t *testing.T) {
			args := []string{"--addr", taken.Addr().String(), "--broker", broker}
			if broker == brokerRedis {
				url := redisserver.URL(t)
				prefix := fmt.Sprintf("tqtest-start-%08x", rand.Uint32())
				redisserver.DeleteAfter(t, url, prefix)
				args = append(args, "--redis-url", url, "--redis-prefix", prefix)
			}
			cfg, err := parseConfig(args, env(nil), nil)
			if err != nil {
				t.Fatal(err)
			}
			log, hook := test.NewNullLogger()
			_, err = start(context.Background(), cfg, env(nil), log.WithField("instance", "t"))
			if err == nil || !strings.Contains(err.Error(), "listen on") {
				t.Fatalf("start on a taken port: %v", err)
			}
			closed := false
			for _, e := range hook.AllEntries() {
				if strings.HasPrefix(e.Message, "taskqueue stopped") && e.Level == logrus.InfoLevel {
					closed = true
				}
			}
			if !closed {
				t.Fatalf("the broker was not closed; log: %v", hook.AllEntries())
			}
		})
	}
}
