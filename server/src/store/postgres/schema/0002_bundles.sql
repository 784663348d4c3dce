-- Bundle bytes, shared by every replica: a bundle is stored whole (all chunks and its row in
-- one transaction) before its release row is written, and each replica keeps a verified copy
-- on local disk as a cache.
CREATE TABLE bundles (
    id TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE TABLE bundle_chunks (
    bundle_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (bundle_id, n)
);
-- Bundles are compressed already: store the chunks out of line without recompressing them.
ALTER TABLE bundle_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
