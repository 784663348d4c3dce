-- Root rotation (`crate::roots`): the one root chain the server was given.
CREATE TABLE root_chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain BLOB NOT NULL,
    newest_version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
