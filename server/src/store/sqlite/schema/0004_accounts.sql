-- People and service accounts (`store::accounts`), their enrolments and console sessions, and
-- four-eyes decisions. Secrets are stored hashed: enrolment codes and session ids as SHA-256,
-- passphrases as Argon2id PHC strings.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    roles TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    passphrase_hash TEXT,
    totp_secret BLOB,
    totp_last_step INTEGER,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER
);
CREATE TABLE enrolments (
    hash BLOB PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name),
    expires_at INTEGER NOT NULL,
    started INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX enrolments_by_user ON enrolments (user_name);
CREATE TABLE sessions (
    hash BLOB PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name),
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    reauth_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_name);
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    decision TEXT NOT NULL,
    by_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX approvals_by_subject ON approvals (kind, subject, id);
CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals
    BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
    BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
-- Every API token has an owner, the audit actor of its requests. Tokens from before accounts
-- become owned by a service account named after their label, holding their roles.
ALTER TABLE tokens ADD COLUMN owner TEXT REFERENCES users (name);
INSERT INTO users (name, kind, roles, state, created_at)
    SELECT t.name, 'service',
           (SELECT json_group_array(role) FROM (SELECT DISTINCT role FROM tokens r
                WHERE r.name = t.name AND r.device_id IS NULL ORDER BY role)),
           'active', MIN(t.created_at)
    FROM tokens t WHERE t.device_id IS NULL GROUP BY t.name;
UPDATE tokens SET owner = name WHERE device_id IS NULL;
