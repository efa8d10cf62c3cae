-- Ironic's remaining node fields: scheduling and ownership, protection and
-- retirement, traits (a sorted JSON list of names), and the conductor-owned
-- fields the API shows read-only. JSON values as text; timestamps in
-- microseconds since the Unix epoch.
ALTER TABLE nodes ADD COLUMN resource_class TEXT;
ALTER TABLE nodes ADD COLUMN owner TEXT;
ALTER TABLE nodes ADD COLUMN lessee TEXT;
ALTER TABLE nodes ADD COLUMN description TEXT;
ALTER TABLE nodes ADD COLUMN automated_clean BOOLEAN;
ALTER TABLE nodes ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE nodes ADD COLUMN protected_reason TEXT;
ALTER TABLE nodes ADD COLUMN retired BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE nodes ADD COLUMN retired_reason TEXT;
ALTER TABLE nodes ADD COLUMN disable_power_off BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE nodes ADD COLUMN shard TEXT;
ALTER TABLE nodes ADD COLUMN parent_node TEXT;
ALTER TABLE nodes ADD COLUMN network_data TEXT NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN boot_mode TEXT;
ALTER TABLE nodes ADD COLUMN secure_boot BOOLEAN;
ALTER TABLE nodes ADD COLUMN instance_name TEXT;
ALTER TABLE nodes ADD COLUMN health TEXT;
ALTER TABLE nodes ADD COLUMN chassis_uuid TEXT;
ALTER TABLE nodes ADD COLUMN traits TEXT NOT NULL DEFAULT '[]';
ALTER TABLE nodes ADD COLUMN fault TEXT;
ALTER TABLE nodes ADD COLUMN allocation_uuid TEXT;
ALTER TABLE nodes ADD COLUMN console_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE nodes ADD COLUMN raid_config TEXT NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN target_raid_config TEXT NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN inspection_started_at BIGINT;
ALTER TABLE nodes ADD COLUMN inspection_finished_at BIGINT;
-- The list filters that select few nodes of many.
CREATE INDEX nodes_resource_class_idx ON nodes (resource_class);
CREATE INDEX nodes_owner_idx ON nodes (owner);
CREATE INDEX nodes_lessee_idx ON nodes (lessee);
CREATE INDEX nodes_shard_idx ON nodes (shard);
CREATE INDEX nodes_parent_node_idx ON nodes (parent_node);
CREATE INDEX nodes_chassis_uuid_idx ON nodes (chassis_uuid);
