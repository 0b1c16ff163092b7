-- The rest of what the hub keeps. Records whose shape is the hub's own (accounts, policies,
-- rollouts) are kept whole as jsonb, as the embedded store keeps them; what is looked up,
-- joined, counted or locked on is a column of its own.

CREATE TABLE operators (
    name         text PRIMARY KEY,
    setup_sha256 text,
    record       jsonb NOT NULL
);
CREATE INDEX operators_by_setup ON operators (setup_sha256) WHERE setup_sha256 IS NOT NULL;

CREATE TABLE api_tokens (
    digest   text PRIMARY KEY,
    operator text NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    name     text NOT NULL,
    record   jsonb NOT NULL,
    UNIQUE (operator, name)
);

CREATE TABLE sessions (
    digest   text PRIMARY KEY,
    operator text NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    record   jsonb NOT NULL
);
CREATE INDEX sessions_by_operator ON sessions (operator);

-- The last number given to each device's deployments: the row lock of its upsert orders two
-- deployments made at once.
CREATE TABLE deploy_numbers (
    device text PRIMARY KEY,
    last   bigint NOT NULL
);

CREATE TABLE deployments (
    device text NOT NULL,
    number bigint NOT NULL,
    id     text NOT NULL,
    state  text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (device, number)
);
CREATE INDEX deployments_by_id ON deployments (device, id);

CREATE TABLE snapshots (
    id      text PRIMARY KEY,
    device  text NOT NULL,
    created bigint NOT NULL,
    record  jsonb NOT NULL
);
CREATE INDEX snapshots_by_device ON snapshots (device, created);

CREATE TABLE sboms (
    device text PRIMARY KEY,
    sbom   jsonb NOT NULL
);

CREATE TABLE policies (
    device text PRIMARY KEY,
    number bigint NOT NULL,
    state  text NOT NULL,
    record jsonb NOT NULL
);

CREATE TABLE policy_tokens (
    device text NOT NULL,
    name   text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (device, name)
);

CREATE TABLE device_groups (
    name   text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE rollouts (
    id     text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE pipelines (
    name   text PRIMARY KEY,
    record jsonb NOT NULL
);

-- What each hub recorded (its own journal file is the hash-chained trail; this is the fleet's
-- view of it). seq is the hub's journal seq.
CREATE TABLE hub_events (
    hub    text NOT NULL,
    seq    bigint NOT NULL,
    device text,
    at_ms  bigint NOT NULL,
    kind   text NOT NULL,
    actor  text NOT NULL,
    event  jsonb NOT NULL,
    PRIMARY KEY (hub, seq)
);
CREATE INDEX hub_events_by_time ON hub_events (at_ms DESC);
CREATE INDEX hub_events_by_device ON hub_events (device, at_ms DESC) WHERE device IS NOT NULL;

CREATE TABLE presence_samples (
    at     bigint PRIMARY KEY,
    online integer NOT NULL,
    total  integer NOT NULL
);
