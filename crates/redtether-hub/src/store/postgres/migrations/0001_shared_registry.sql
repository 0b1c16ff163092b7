-- What the hubs of a cluster share (crates/redtether-hub/src/store/domain.rs): devices and their
-- certificates, one-time enrollment tokens, delivered device audit, presence, shared secrets.
-- Unix seconds are bigint, as the embedded store keeps them; times only the database compares
-- (heartbeats) are the database's own timestamptz.

CREATE TABLE devices (
    id               text PRIMARY KEY,
    enrolled         bigint NOT NULL,
    cert_serial      text NOT NULL,
    cert_not_after   bigint NOT NULL,
    revoked          boolean NOT NULL DEFAULT false,
    last_seen        bigint,
    agent_version    text,
    status           jsonb,
    previous_serial  text,
    audit_acked      bigint NOT NULL DEFAULT 0,
    audit_duplicates bigint NOT NULL DEFAULT 0,
    device_key       text,
    sbom_outdated    integer,
    device_group     text,
    -- Bumped by every change: a change is written only over the row it read (optimistic).
    version          bigint NOT NULL DEFAULT 0
);

CREATE TABLE revoked_certificates (
    serial     text PRIMARY KEY,
    device     text NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);

-- Tokens are kept as SHA-256 digests; used_at is set by exactly one enrollment
-- (UPDATE ... WHERE used_at IS NULL).
CREATE TABLE enroll_tokens (
    digest       bytea PRIMARY KEY,
    device_id    text NOT NULL,
    created      bigint NOT NULL,
    expires      bigint NOT NULL,
    used_at      timestamptz,
    device_group text
);

-- Keyed by the event's id as well as its seq: a device whose journal started again (wiped and
-- enrolled anew) sends new events under old seqs, and those are not duplicates. at_ms places the
-- event in the fleet audit: its own time, never later than when the hub stored it.
CREATE TABLE device_audit (
    device text NOT NULL,
    seq    bigint NOT NULL,
    id     text NOT NULL,
    at_ms  bigint NOT NULL,
    kind   text NOT NULL,
    actor  text NOT NULL,
    event  jsonb NOT NULL,
    PRIMARY KEY (device, seq, id)
);
CREATE INDEX device_audit_by_time ON device_audit (at_ms DESC, device DESC, seq DESC, id DESC);
CREATE INDEX device_audit_by_device_time ON device_audit (device, at_ms DESC, seq DESC, id DESC);

CREATE TABLE hubs (
    id        text PRIMARY KEY,
    address   text NOT NULL,
    heartbeat timestamptz NOT NULL
);

-- One epoch per holding: only the holding that wrote an entry removes it.
CREATE SEQUENCE presence_epoch;

CREATE TABLE presence (
    device text PRIMARY KEY,
    hub    text NOT NULL REFERENCES hubs (id) ON DELETE CASCADE,
    epoch  bigint NOT NULL
);
CREATE INDEX presence_by_hub ON presence (hub);

CREATE TABLE shared_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
