-- ferric schema, SQLite flavour. Timestamps are microseconds since the Unix
-- epoch taken from the database clock. JSON values are stored as text; booleans as
-- INTEGER 0/1 (sqlx's Any driver cannot decode SQLite's BOOLEAN type).

CREATE TABLE nodes (
    uuid                   TEXT PRIMARY KEY NOT NULL,
    name                   TEXT UNIQUE,
    driver                 TEXT NOT NULL,
    driver_info            TEXT NOT NULL DEFAULT '{}',
    properties             TEXT NOT NULL DEFAULT '{}',
    extra                  TEXT NOT NULL DEFAULT '{}',
    instance_info          TEXT NOT NULL DEFAULT '{}',
    instance_uuid          TEXT UNIQUE,
    interfaces             TEXT NOT NULL DEFAULT '{}',
    provision_state        TEXT NOT NULL,
    target_provision_state TEXT,
    power_state            TEXT,
    target_power_state     TEXT,
    maintenance            INTEGER NOT NULL DEFAULT 0,
    maintenance_reason     TEXT,
    last_error             TEXT,
    conductor_group        TEXT NOT NULL DEFAULT '',
    conductor_affinity     TEXT,
    reservation            TEXT,
    lock_task              TEXT,
    lock_epoch             BIGINT NOT NULL DEFAULT 0,
    lock_purpose           TEXT,
    lock_acquired_at       BIGINT,
    lock_waiters           BIGINT NOT NULL DEFAULT 0,
    revision               BIGINT NOT NULL DEFAULT 0,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT,
    provision_updated_at   BIGINT
);
CREATE INDEX nodes_reservation_idx ON nodes (reservation);
CREATE INDEX nodes_provision_state_idx ON nodes (provision_state);
CREATE INDEX nodes_conductor_group_idx ON nodes (conductor_group);

CREATE TABLE conductors (
    hostname        TEXT PRIMARY KEY NOT NULL,
    conductor_group TEXT NOT NULL DEFAULT '',
    drivers         TEXT NOT NULL DEFAULT '[]',
    online          INTEGER NOT NULL DEFAULT 1,
    started_at      BIGINT NOT NULL,
    heartbeat_at    BIGINT NOT NULL
);

CREATE TABLE lock_waiters (
    ticket      INTEGER PRIMARY KEY AUTOINCREMENT,
    node_uuid   TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    conductor   TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    exclusive   INTEGER NOT NULL DEFAULT 1,
    enqueued_at BIGINT NOT NULL,
    deadline    BIGINT
);
CREATE INDEX lock_waiters_node_idx ON lock_waiters (node_uuid, ticket);
CREATE INDEX lock_waiters_conductor_idx ON lock_waiters (conductor);

CREATE TABLE revision_counter (
    id    INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO revision_counter (id, value) VALUES (1, 0);

CREATE TABLE node_changes (
    revision   BIGINT PRIMARY KEY NOT NULL,
    node_uuid  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    snapshot   TEXT
);

CREATE TABLE lock_audit (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    node_uuid        TEXT NOT NULL,
    action           TEXT NOT NULL,
    actor            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    previous_holder  TEXT,
    previous_epoch   BIGINT NOT NULL,
    previous_purpose TEXT,
    at               BIGINT NOT NULL
);
