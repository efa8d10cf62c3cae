-- Allocations (Ironic's /v1/allocations): a secondary-resource table of the
-- generic shape (0004). `node_uuid` is the node the allocation got; it is
-- written together with the node's instance_uuid and allocation_uuid, in one
-- transaction fenced by the node's lock (Store::bind_allocation), and cleared
-- with them (Store::delete_allocation). UNIQUE: a node holds at most one
-- allocation (NULLs, allocations without a node, do not collide). A node's
-- allocation is deleted with the node (explicitly, with its change-feed
-- entry; the CASCADE is the backstop). The body holds state, last_error,
-- resource_class, traits, candidate_nodes, extra, owner and
-- conductor_affinity (the conductor processing it, for take-over).

CREATE TABLE allocations (
    uuid        TEXT NOT NULL CONSTRAINT allocations_uuid_pkey PRIMARY KEY,
    name        TEXT CONSTRAINT allocations_name_uniq UNIQUE,
    node_uuid   TEXT CONSTRAINT allocations_node_uniq UNIQUE
                REFERENCES nodes (uuid) ON DELETE CASCADE,
    parent_uuid TEXT,
    ukey        TEXT CONSTRAINT allocations_ukey_uniq UNIQUE,
    body        TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT,
    revision    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX allocations_created_idx ON allocations (created_at, uuid);
