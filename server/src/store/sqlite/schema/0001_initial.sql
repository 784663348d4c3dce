CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    device_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    vendor TEXT NOT NULL,
    device TEXT NOT NULL,
    component TEXT NOT NULL,
    version TEXT NOT NULL,
    security_counter INTEGER NOT NULL,
    payload_size INTEGER NOT NULL,
    payload_digest TEXT NOT NULL,
    key_set_version INTEGER NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    size INTEGER NOT NULL,
    uploaded_at INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    vendor TEXT NOT NULL,
    device TEXT NOT NULL,
    public_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    groups TEXT NOT NULL,
    labels TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    version TEXT,
    security_counter INTEGER,
    state TEXT
);
CREATE TABLE challenges (
    device_id TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    version TEXT NOT NULL,
    security_counter INTEGER NOT NULL,
    state TEXT NOT NULL,
    deployment_id INTEGER,
    detail TEXT
);
CREATE INDEX reports_by_device ON reports (device_id, id);
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases (id),
    vendor TEXT NOT NULL,
    device TEXT NOT NULL,
    target TEXT NOT NULL,
    policy TEXT NOT NULL,
    phase INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    device_count INTEGER NOT NULL
);
CREATE TABLE members (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    device_id TEXT NOT NULL REFERENCES devices (id),
    rank INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX members_by_device ON members (device_id);
CREATE TABLE rollout_counts (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    bucket INTEGER NOT NULL,
    confirmed INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    open INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, bucket)
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
