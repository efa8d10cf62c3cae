-- The steps engine: conductor-private state and the current steps (Ironic's
-- driver_internal_info, clean_step and deploy_step), JSON objects as text.
ALTER TABLE nodes ADD COLUMN driver_internal_info TEXT NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN clean_step TEXT NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN deploy_step TEXT NOT NULL DEFAULT '{}';
