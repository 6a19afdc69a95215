// Package pgserver gives tests a PostgreSQL: the shared one named by
// TASKQUEUE_TEST_POSTGRES_URL, with a schema of their own.
package pgserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// URL returns the shared test Postgres from TASKQUEUE_TEST_POSTGRES_URL, or
// skips the test saying how to run it. With
// TASKQUEUE_TEST_POSTGRES_REQUIRED=1 (as CI sets) a missing URL fails the
// test instead.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TASKQUEUE_TEST_POSTGRES_URL")
	if u == "" {
		if os.Getenv("TASKQUEUE_TEST_POSTGRES_REQUIRED") == "1" {
			t.Fatal("TASKQUEUE_TEST_POSTGRES_URL is not set but Postgres tests are required")
		}
		t.Skip("set TASKQUEUE_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test, or run scripts/ensure-postgres.sh) to run the Postgres tests")
	}
	return u
}

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// Schema returns a new schema name for t, dropped with everything in it
// when t ends.
func Schema(t testing.TB, url string) string {
	t.Helper()
	name := notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	schema := fmt.Sprintf("tqt_%s_%08x", strings.Trim(name, "_"), rand.Uint32())
	t.Cleanup(func() { Drop(t, url, schema) })
	return schema
}

// Drop drops schema and everything in it.
func Drop(t testing.TB, url, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Logf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Logf("drop schema %s: %v", schema, err)
	}
}

// Server is a private PostgreSQL on a loopback port of its own, for tests
// that stop and restart the database under the service.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	// URL is postgres://postgres@127.0.0.1:port/postgres.
	URL string
}

// Start runs initdb and a postgres server in a temporary directory, or
// skips the test when PostgreSQL's programs are not installed, unless
// TASKQUEUE_TEST_POSTGRES_REQUIRED=1. Run as root, the server runs as
// user postgres (postgres refuses root).
func Start(t testing.TB) *Server {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			bins = []string{p}
		}
	}
	if len(bins) == 0 {
		if os.Getenv("TASKQUEUE_TEST_POSTGRES_REQUIRED") == "1" {
			t.Fatal("PostgreSQL's initdb is not installed but Postgres tests are required (scripts/ensure-postgres.sh installs it)")
		}
		t.Skip("PostgreSQL's initdb is not installed (apt-get install postgresql); needed to stop and restart Postgres")
	}
	sort.Strings(bins)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "tqpg")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: dir, port: port,
		URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", port)}
	t.Cleanup(func() { s.Stop(); os.RemoveAll(dir) })
	if os.Getuid() == 0 {
		if out, err := exec.Command("chown", "postgres", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v %s", dir, err, out)
		}
	}
	s.run("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync")
	s.Restart()
	return s
}

func (s *Server) run(prog string, args ...string) {
	s.t.Helper()
	path := filepath.Join(s.bin, prog)
	var cmd *exec.Cmd
	if os.Getuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
	}
}

// Restart starts the server (again) on the same port and data and waits
// until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "postgres.log"), "-w",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s.port, s.dir), "start")
}

// Stop shuts the server down at once (pg_ctl stop -m immediate: no
// checkpoint, as after a crash; what was committed survives).
func (s *Server) Stop() {
	path := filepath.Join(s.bin, "pg_ctl")
	args := []string{"-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop"}
	var cmd *exec.Cmd
	if os.Getuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	_ = cmd.Run()
}
