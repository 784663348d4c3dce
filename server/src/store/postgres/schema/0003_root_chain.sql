-- Root rotation (`crate::roots`): the one root chain the server was given (one row).
CREATE TABLE root_chain (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    chain BYTEA NOT NULL,
    newest_version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
