package test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/taskqueue/taskqueue/test/pgserver"
)

// postgresArgs returns the flags for an instance on a fresh queue (a
// schema of its own, dropped when t ends) of the Postgres at url. Its
// connections carry application_name tq_<schema>, so a test can find
// them.
func postgresArgs(t *testing.T, url string) []string {
	schema := pgserver.Schema(t, url)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return []string{"--broker", "postgres", "--postgres-url", url + sep + "application_name=tq_" + schema, "--postgres-schema", schema}
}

func TestPostgresThreeInstancesRunEachTaskOnce(t *testing.T) {
	threeInstancesRunEachTaskOnce(t, postgresArgs(t, pgserver.URL(t)))
}

func TestPostgresGlobalPriorityAcrossInstances(t *testing.T) {
	globalPriorityAcrossInstances(t, postgresArgs(t, pgserver.URL(t)))
}

func TestPostgresKilledInstanceTaskIsRecovered(t *testing.T) {
	killedInstanceTaskIsRecovered(t, postgresArgs(t, pgserver.URL(t)))
}

func TestPostgresStopAllAndRestartLosesNothing(t *testing.T) {
	stopAllAndRestartLosesNothing(t, postgresArgs(t, pgserver.URL(t)), "tasks stay in Postgres")
}

func TestPostgresRestartUnderLoad(t *testing.T) {
	srv := pgserver.Start(t)
	restartUnderLoad(t, postgresArgs(t, srv.URL), srv.Stop, srv.Restart, "Postgres answers again")
}

// Killing the instances' connections (pg_terminate_backend, as a failover
// or an administrator would) under load loses no accepted task: the pools
// reconnect, and every accepted task succeeds exactly as the others do.
func TestPostgresTerminatedConnectionsUnderLoad(t *testing.T) {
	url := pgserver.URL(t)
	args := postgresArgs(t, url)
	app := args[3][strings.Index(args[3], "application_name=")+len("application_name="):]
	servers := startN(t, 2, append(args, "--workers", "4", "--lease", "2s")...)
	load := startLoad(t, servers, false)
	count := func() int { n, _ := load.counts(); return n }
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	killed := 0
	for round := 0; round < 5; round++ {
		want := count() + 50
		eventually(t, "load between the kills", func() bool { return count() >= want })
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		killed += n
	}
	want := count() + 50
	eventually(t, "submissions accepted after the last kill", func() bool { return count() >= want })
	accepted := load.finish()
	if killed < 5 {
		t.Fatalf("killed %d connections in 5 rounds; the test did not reach the instances' connections", killed)
	}
	waitSucceeded(t, servers, accepted)
	t.Logf("%d connections killed, %d tasks accepted, all succeeded", killed, len(accepted))
}

// An instance that cannot reach Postgres at start exits 1, naming the URL
// without its password.
func TestPostgresUnreachableAtStart(t *testing.T) {
	s := startNoWait(t, "--broker", "postgres", "--postgres-url", "postgres://tq:hunter2@127.0.0.1:1/taskqueue")
	err := s.wait()
	if code := exitCodeOf(err); code != 1 {
		t.Fatalf("exit %v (code %d); want 1", err, code)
	}
	out := s.logText()
	if !strings.Contains(out, "127.0.0.1:1") || strings.Contains(out, "hunter2") {
		t.Fatalf("output does not name the URL without its password:\n%s", out)
	}
}

// With --postgres-migrate=false an instance refuses a schema that
// taskqueue migrate has not brought up to date, and starts once it has.
func TestPostgresMigrateSeparately(t *testing.T) {
	url := pgserver.URL(t)
	args := postgresArgs(t, url)
	s := startNoWait(t, append(args, "--postgres-migrate=false")...)
	if code := exitCodeOf(s.wait()); code != 1 || !strings.Contains(s.logText(), "taskqueue migrate") {
		t.Fatalf("start on an empty schema with --postgres-migrate=false: code %d\n%s", code, s.logText())
	}
	out := runBinary(t, append([]string{"migrate"}, args...)...)
	if !strings.Contains(out, "migrated from version 0 to") {
		t.Fatalf("taskqueue migrate printed:\n%s", out)
	}
	if out := runBinary(t, append([]string{"migrate"}, args...)...); !strings.Contains(out, "up to date") {
		t.Fatalf("second taskqueue migrate printed:\n%s", out)
	}
	srv := start(t, append(args, "--postgres-migrate=false")...)
	id := srv.submit("noop", 0, 0)
	srv.waitStatus(id, "succeeded")
}

// exitCodeOf returns a finished process's exit code (0 for nil).
func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// runBinary runs the binary with args and returns its output, failing t
// unless it exits 0.
func runBinary(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("taskqueue %v: %v\n%s", args, err, out)
	}
	return string(out)
}
