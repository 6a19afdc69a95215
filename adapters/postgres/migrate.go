package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one forward-only step of the schema, numbered from 1.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order. Their files are
// named NNNN_name.sql; a gap or a duplicate number is a build mistake and
// panics (a test holds it).
func migrations() []migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			panic("migration file " + e.Name() + " is not named NNNN_name.sql")
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			panic(fmt.Sprintf("migrations must be numbered 1, 2, 3...: found %d at position %d", m.version, i+1))
		}
	}
	return out
}

// LatestVersion is the schema version this build writes and reads.
func LatestVersion() int { return len(migrations()) }

// quoteIdent quotes a schema name for SQL.
func quoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// lockKey is the advisory lock key of name within schema: the same on
// every instance, distinct per schema.
func lockKey(schema, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("taskqueue\x00" + schema + "\x00" + name))
	return int64(h.Sum64())
}

// Migrate brings schema up to LatestVersion, creating it when missing.
// It runs under an advisory lock, so instances starting at once apply
// each migration once, and each migration in its own transaction (a
// failed one leaves the schema at the version before it). It returns the
// versions before and after, and an error when the schema is newer than
// this build knows.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) (from, to int, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Release()
	key := lockKey(schema, "migrate")
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return 0, 0, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		// A lost connection releases the lock by itself.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key)
	}()
	q := quoteIdent(schema)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
		return 0, 0, fmt.Errorf("create schema %s: %w", q, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+q+".schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return 0, 0, fmt.Errorf("create %s.schema_migrations: %w", q, err)
	}
	from, err = version(ctx, conn.Conn(), schema)
	if err != nil {
		return 0, 0, err
	}
	all := migrations()
	if from > len(all) {
		return from, from, fmt.Errorf("schema %s is at version %d, newer than this build of taskqueue knows (%d): run a newer taskqueue", schema, from, len(all))
	}
	for _, m := range all[from:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, strings.ReplaceAll(m.sql, "{{schema}}", q)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+q+".schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return from, m.version - 1, fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
	}
	return from, len(all), nil
}

// Version returns the schema's version: 0 when it has no migrations table
// (a new or foreign schema).
func Version(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	return version(ctx, conn.Conn(), schema)
}

func version(ctx context.Context, conn *pgx.Conn, schema string) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", quoteIdent(schema)+".schema_migrations").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+quoteIdent(schema)+".schema_migrations").Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v, nil
}
