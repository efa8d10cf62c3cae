-- Deploy templates, runbooks, volume connectors and targets, inspection
-- rules (issue 13): more secondary-resource kinds on the generic store
-- (src/sql/resources.rs), every table with the shape of migration 0004.
--   deploy_templates: name = the template's trait name (UNIQUE).
--   runbooks:         name UNIQUE.
--   volume_connectors: node_uuid; ukey = "<type>/<connector_id>" (Ironic's
--                     UNIQUE (type, connector_id)).
--   volume_targets:   node_uuid; ukey = "<node_uuid>/<boot_index>" (Ironic's
--                     UNIQUE (node_id, boot_index)).
--   inspection_rules: no name, no key.

CREATE TABLE deploy_templates (
    uuid        TEXT NOT NULL CONSTRAINT deploy_templates_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT deploy_templates_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT deploy_templates_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX deploy_templates_created_idx ON deploy_templates (created_at, uuid);

CREATE TABLE runbooks (
    uuid        TEXT NOT NULL CONSTRAINT runbooks_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT runbooks_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT runbooks_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runbooks_created_idx ON runbooks (created_at, uuid);

CREATE TABLE volume_connectors (
    uuid        TEXT NOT NULL CONSTRAINT volume_connectors_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT volume_connectors_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT volume_connectors_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX volume_connectors_node_idx ON volume_connectors (node_uuid);
CREATE INDEX volume_connectors_created_idx ON volume_connectors (created_at, uuid);

CREATE TABLE volume_targets (
    uuid        TEXT NOT NULL CONSTRAINT volume_targets_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT volume_targets_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT volume_targets_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX volume_targets_node_idx ON volume_targets (node_uuid);
CREATE INDEX volume_targets_created_idx ON volume_targets (created_at, uuid);

CREATE TABLE inspection_rules (
    uuid        TEXT NOT NULL CONSTRAINT inspection_rules_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT inspection_rules_name_uniq UNIQUE,
    node_uuid   TEXT REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT inspection_rules_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX inspection_rules_created_idx ON inspection_rules (created_at, uuid);
