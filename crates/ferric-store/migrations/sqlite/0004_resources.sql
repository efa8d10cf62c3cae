-- Secondary resources (ports, portgroups, chassis; later allocations, deploy
-- templates, volume connectors/targets...): one table per kind, every table
-- with the same column shape, read and written by one generic store layer
-- (src/sql/resources.rs). `ukey` is the kind's own unique key (a port's or
-- portgroup's MAC address; later e.g. a volume connector's "type/connector_id"),
-- `parent_uuid` its parent or group (a port's portgroup), `body` the JSON
-- object of every other field. A node's resources go with the node
-- (ON DELETE CASCADE; the store also deletes them explicitly, first, so that
-- each gets its change-feed entry).

CREATE TABLE ports (
    uuid        TEXT NOT NULL CONSTRAINT ports_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT ports_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT ports_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX ports_node_idx ON ports (node_uuid);
CREATE INDEX ports_parent_idx ON ports (parent_uuid);
CREATE INDEX ports_created_idx ON ports (created_at, uuid);

CREATE TABLE portgroups (
    uuid        TEXT NOT NULL CONSTRAINT portgroups_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT portgroups_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT portgroups_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX portgroups_node_idx ON portgroups (node_uuid);
CREATE INDEX portgroups_created_idx ON portgroups (created_at, uuid);

CREATE TABLE chassis (
    uuid        TEXT NOT NULL CONSTRAINT chassis_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT chassis_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT chassis_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX chassis_created_idx ON chassis (created_at, uuid);

-- The change feed covers every kind: NULL = the node itself (old rows),
-- otherwise the resource kind, whose UUID is then in node_uuid.
ALTER TABLE node_changes ADD COLUMN resource TEXT;
