package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/postgres"
)

// openPostgres opens the Postgres broker (applying migrations unless
// --postgres-migrate=false) and says how to close it.
func openPostgres(ctx context.Context, cfg config, runs []string, log logrus.FieldLogger) (openedBroker, error) {
	pb, err := postgres.New(ctx, postgres.Options{
		URL:             cfg.PostgresURL,
		Schema:          cfg.PostgresSchema,
		Migrate:         cfg.PostgresMigrate,
		PollOnly:        cfg.PostgresPoll,
		Instance:        cfg.InstanceID,
		QueueSize:       cfg.QueueSize,
		Retention:       cfg.Retention,
		MaxFinished:     cfg.MaxFinished,
		FailedRetention: cfg.FailedRetention,
		MaxFailed:       cfg.MaxFailed,
		Lease:           cfg.Lease,
		Policy:          cfg.RetryPolicy,
		Types:           runs,
		Limits:          cfg.TypeLimits,
		KeyConcurrency:  cfg.KeyConcurrency,
		Aging:           cfg.PriorityAging,
		Log:             log,
	})
	if err != nil {
		return openedBroker{}, err
	}
	return sharedOpened(pb, "Postgres", func(ctx context.Context) (logrus.Fields, error) {
		c, err := pb.Counts(ctx)
		return logrus.Fields{"pending": c.Pending, "scheduled_or_retrying": c.Waiting, "running": c.Running}, err
	}, log), nil
}

// migrate is `taskqueue migrate`: it applies the Postgres schema
// migrations of --postgres-url and --postgres-schema (flags or their
// variables) and exits, for teams that migrate before deploying and run
// the service with --postgres-migrate=false.
func migrate(args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return configError(err)
	}
	if err := postgres.ValidateSchema(cfg.PostgresSchema); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--postgres-schema: %w", err)}
	}
	ctx := context.Background()
	pool, err := postgres.Open(ctx, cfg.PostgresURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	from, to, err := postgres.Migrate(ctx, pool, cfg.PostgresSchema)
	if err != nil {
		return fmt.Errorf("postgres at %s: schema %s: %w", postgres.Redact(cfg.PostgresURL), cfg.PostgresSchema, err)
	}
	if from == to {
		fmt.Fprintf(stdout, "schema %s at %s is up to date (version %d)\n", cfg.PostgresSchema, postgres.Redact(cfg.PostgresURL), to)
	} else {
		fmt.Fprintf(stdout, "schema %s at %s migrated from version %d to %d\n", cfg.PostgresSchema, postgres.Redact(cfg.PostgresURL), from, to)
	}
	return nil
}
