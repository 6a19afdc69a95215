// Package redisserver runs a private redis-server for tests that need to
// stop and restart Redis under the service.
package redisserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Server is a redis-server process on a loopback port of its own.
type Server struct {
	t    testing.TB
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	// URL is redis://127.0.0.1:port/0.
	URL string
}

// Start runs redis-server with an append-only file in a temporary
// directory (so a restart keeps the data), or skips the test when
// redis-server is not installed, unless TASKQUEUE_TEST_REDIS_REQUIRED=1.
func Start(t testing.TB) *Server { return StartWith(t) }

// StartWith is Start with extra redis-server arguments (such as
// "--maxmemory", "8mb").
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("TASKQUEUE_TEST_REDIS_REQUIRED") == "1" {
			t.Fatal("redis-server is not installed but Redis tests are required")
		}
		t.Skip("redis-server is not installed (apt-get install redis-server) ; needed to stop and restart Redis")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{t: t, port: port, dir: t.TempDir(), args: args, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the server again on the same port and data directory
// and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--appendonly", "yes", "--appendfsync", "always", "--save", ""}, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	opts, _ := goredis.ParseURL(s.URL)
	c := goredis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Fill makes the server refuse writes for lack of memory, as a Redis at
// maxmemory with the noeviction policy does: it writes 4 MB of filler,
// then sets maxmemory to half the memory in use.
func (s *Server) Fill(t testing.TB) {
	t.Helper()
	opts, _ := goredis.ParseURL(s.URL)
	c := goredis.NewClient(opts)
	defer c.Close()
	ctx := context.Background()
	for i := 0; i < 64; i++ {
		if err := c.Set(ctx, fmt.Sprintf("filler:%d", i), make([]byte, 64<<10), 0).Err(); err != nil {
			t.Fatalf("fill Redis: %v", err)
		}
	}
	info, err := c.InfoMap(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	used, err := strconv.Atoi(info["Memory"]["used_memory"])
	if err != nil {
		t.Fatalf("used_memory: %v", err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", strconv.Itoa(used/2)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "filler:check", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("Redis still takes writes after filling: %v", err)
	}
}

// Kill stops the server at once (SIGKILL), as a crash or a cut link would.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// URL returns the shared test Redis from TASKQUEUE_TEST_REDIS_URL, or skips
// the test saying how to run it. With TASKQUEUE_TEST_REDIS_REQUIRED=1 (as
// CI sets) a missing URL fails the test instead.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TASKQUEUE_TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("TASKQUEUE_TEST_REDIS_REQUIRED") == "1" {
			t.Fatal("TASKQUEUE_TEST_REDIS_URL is not set but Redis tests are required")
		}
		t.Skip("set TASKQUEUE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0, or run scripts/ensure-redis.sh) to run the Redis tests")
	}
	return u
}

// DeleteAfter deletes every key of the queue named prefix on url when t
// ends, so tests sharing one Redis leave nothing behind.
func DeleteAfter(t testing.TB, url, prefix string) {
	t.Cleanup(func() {
		opts, err := goredis.ParseURL(url)
		if err != nil {
			return
		}
		c := goredis.NewClient(opts)
		defer c.Close()
		ctx := context.Background()
		iter := c.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
}
