-- Passkeys (WebAuthn) as a second factor (`store::passkeys`). A person's user handle is a
-- random 16 bytes (never their name: authenticators may show or sync it); each passkey keeps
-- the public key and what the relying-party library needs to verify assertions (its static
-- state) and what changes at each use (its dynamic state: signature counter, flags). A
-- ceremony row is one outstanding challenge: taken (deleted) at first use, refused once
-- expired, swept when a new one is made.
ALTER TABLE users ADD COLUMN webauthn_handle BLOB;
CREATE TABLE passkeys (
    id BLOB PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name),
    name TEXT NOT NULL,
    transports INTEGER NOT NULL,
    static_state BLOB NOT NULL,
    dynamic_state BLOB NOT NULL,
    sign_count INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX passkeys_by_user ON passkeys (user_name);
CREATE TABLE webauthn_ceremonies (
    challenge BLOB PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name),
    purpose TEXT NOT NULL,
    session_hash BLOB,
    state BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
