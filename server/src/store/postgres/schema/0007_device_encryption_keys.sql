-- Encrypted payloads (manifests/FORMAT.md §9). A device's X25519 encryption public key and
-- its recipient id (SHA-256 of the key, hex); the encrypted releases with the SHA-256 of their
-- signed manifest (the `release` field of their key records); the key records (SGL-WKEY, 138
-- bytes each) the server hands to each device. The server holds no private key and no content
-- key: a record is useless without the device's private key.
CREATE TABLE device_encryption_keys (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    public_key TEXT NOT NULL,
    recipient TEXT NOT NULL UNIQUE,
    set_at BIGINT NOT NULL
);
CREATE TABLE encrypted_releases (
    release_id TEXT PRIMARY KEY REFERENCES releases(id),
    manifest_digest TEXT NOT NULL
);
CREATE TABLE key_records (
    release_id TEXT NOT NULL REFERENCES encrypted_releases(release_id),
    recipient TEXT NOT NULL,
    record BYTEA NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (release_id, recipient)
);
