-- The queue's tables, in the schema the broker is given ({{schema}}).
-- Times are Unix nanoseconds (bigint): the domain keeps nanoseconds, and
-- timestamptz would cut them to microseconds. Statuses are the domain's
-- numbers: 1 pending, 2 running, 3 retrying, 4 succeeded, 5 failed,
-- 6 scheduled, 7 cancelled (TestStatusNumbers holds them).

-- One row per task: its columns are the whole task, so a read is one row
-- and what is stored says what is true.
CREATE TABLE {{schema}}.tasks (
    id               uuid PRIMARY KEY,
    type             text     NOT NULL,
    fkey             text     NOT NULL DEFAULT '', -- fairness key, '' for none
    priority         smallint NOT NULL,
    status           smallint NOT NULL,
    max_retries      integer  NOT NULL,
    attempts         integer  NOT NULL DEFAULT 0,
    retries_used     integer  NOT NULL DEFAULT 0,
    payload          bytea    NOT NULL,
    last_error       text     NOT NULL DEFAULT '',
    created_at       bigint   NOT NULL,
    updated_at       bigint   NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    next_attempt_at  bigint,
    run_at           bigint,
    result           bytea,
    result_truncated boolean  NOT NULL DEFAULT false,
    -- Where the task waits: seq orders pending tasks (the order they
    -- became pending), pending_since is when, due_at when a scheduled or
    -- retrying task becomes pending.
    seq              bigint   NOT NULL DEFAULT 0,
    pending_since    bigint,
    due_at           bigint,
    -- The running attempt's holder and how long its lease lasts.
    owner            text,
    lease_until      bigint
) WITH (
    -- Room on each page for an updated row version, so most moves are
    -- HOT updates; and vacuum after 2% dead rows rather than 20%: the
    -- table churns (every task is inserted, updated about three times,
    -- and deleted), and a queue table that bloats slows every claim.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- Pending tasks by where a claim looks for them: per type, priority and
-- key, oldest first. A skip scan over it finds every key's head.
CREATE INDEX tasks_ready ON {{schema}}.tasks (type, priority, fkey, seq) WHERE status = 1;
-- Pending tasks of each type in the order they became pending: the
-- oldest pending task of a type (Stats) is one probe. (Every pending
-- task has a seq above 0; saying so in the predicate keeps the planner
-- from using this index for a claim, which tasks_ready serves.)
CREATE INDEX tasks_pending_order ON {{schema}}.tasks (type, seq) WHERE status = 1 AND seq > 0;
-- Scheduled and retrying tasks by when they are due.
CREATE INDEX tasks_due ON {{schema}}.tasks (due_at) WHERE status IN (3, 6);
-- Running attempts by when their lease runs out, and by key (key limits).
CREATE INDEX tasks_leases ON {{schema}}.tasks (lease_until) WHERE status = 2;
CREATE INDEX tasks_running_keys ON {{schema}}.tasks (fkey) WHERE status = 2 AND fkey <> '';
-- Finished tasks by when they finished, for retention and caps.
CREATE INDEX tasks_finished ON {{schema}}.tasks (status, finished_at) WHERE status IN (4, 5, 7);
-- Lists, newest first (ids are time-ordered): by status, and by type
-- and status.
CREATE INDEX tasks_by_status ON {{schema}}.tasks (status, id);
CREATE INDEX tasks_by_type ON {{schema}}.tasks (type, status, id);

-- The order pending tasks go in, and the turns keys take.
CREATE SEQUENCE {{schema}}.seq;

-- How many tasks of each type are in each status: Stats reads these, not
-- the tasks. Each change adds to one of 16 stripes, so writers rarely wait
-- for each other; a count is the sum of its stripes.
CREATE TABLE {{schema}}.counts (
    type   text     NOT NULL,
    status smallint NOT NULL,
    stripe smallint NOT NULL,
    n      bigint   NOT NULL,
    PRIMARY KEY (type, status, stripe)
);

-- The turns fairness keys take, per type and priority: a row for every
-- key with a pending task (every statement that makes a task pending
-- makes sure of it), ordered by turn: when the key was last served, or
-- when it joined (its first pending task's place). A claim serves the
-- keys with the lowest turns first and moves each to the back. Rows of
-- keys with nothing pending are pruned (locked first, so a task becoming
-- pending at that moment keeps its key's row).
CREATE TABLE {{schema}}.turns (
    type     text     NOT NULL,
    priority smallint NOT NULL,
    fkey     text     NOT NULL,
    turn     bigint   NOT NULL,
    PRIMARY KEY (type, priority, fkey)
);
CREATE INDEX turns_order ON {{schema}}.turns (type, priority, turn);

-- Paused types, and the token buckets of rate-limited types.
CREATE TABLE {{schema}}.paused (
    type text PRIMARY KEY
);
CREATE TABLE {{schema}}.buckets (
    type   text PRIMARY KEY,
    tokens double precision NOT NULL,
    at     bigint NOT NULL
);

-- Idempotency keys: one row per key, so of two instances reserving one key
-- at once the primary key lets exactly one in.
CREATE TABLE {{schema}}.idempotency (
    key         text PRIMARY KEY,
    fingerprint text    NOT NULL,
    done        boolean NOT NULL DEFAULT false,
    response    bytea,
    reserved_at bigint  NOT NULL,
    expires_at  bigint  NOT NULL
);
CREATE INDEX idempotency_expiry ON {{schema}}.idempotency (expires_at);
