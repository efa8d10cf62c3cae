-- Node sub-resources (Ironic's node_history, bios_settings,
-- firmware_information and node_inventory tables), keyed by the node's uuid;
-- every row goes with its node (ON DELETE CASCADE). Timestamps are
-- microseconds since the epoch, as on nodes.

CREATE TABLE node_history (
    id                     BIGSERIAL PRIMARY KEY,
    uuid                   TEXT NOT NULL UNIQUE,
    node_uuid              TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    created_at             BIGINT NOT NULL,
    conductor              TEXT,
    event_type             TEXT,
    severity               TEXT,
    event                  TEXT NOT NULL,
    user_id                TEXT,
    project                TEXT,
    state                  TEXT,
    target_provision_state TEXT,
    duration_seconds       BIGINT
);
CREATE INDEX node_history_node_idx ON node_history (node_uuid, id);

CREATE TABLE bios_settings (
    node_uuid        TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    value            TEXT,
    attribute_type   TEXT,
    allowable_values TEXT,
    lower_bound      BIGINT,
    max_length       BIGINT,
    min_length       BIGINT,
    read_only        BOOLEAN,
    reset_required   BOOLEAN,
    is_unique        BOOLEAN,
    upper_bound      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT,
    PRIMARY KEY (node_uuid, name)
);

CREATE TABLE firmware_components (
    node_uuid            TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    component            TEXT NOT NULL,
    initial_version      TEXT NOT NULL,
    current_version      TEXT,
    last_version_flashed TEXT,
    vendor               TEXT,
    model                TEXT,
    serial_number        TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT,
    PRIMARY KEY (node_uuid, component)
);

CREATE TABLE node_inventory (
    node_uuid   TEXT PRIMARY KEY NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    inventory   TEXT NOT NULL,
    plugin_data TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT
);

-- Ironic's node_history_record(error=True): a node write that sets a new,
-- non-empty last_error records it as an ERROR event in the same transaction,
-- so an error is never lost whatever wrote it (a verb, power sync, recovery).
-- The event type is the activity the node was in (Ironic's states.*).
-- At most 300 entries per node are kept ([conductor]node_history_max_entries).
CREATE FUNCTION nodes_last_error_history() RETURNS trigger AS $$
DECLARE
    now_us BIGINT := CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT);
BEGIN
    INSERT INTO node_history (uuid, node_uuid, created_at, conductor, event_type, severity,
                              event, state, target_provision_state, duration_seconds)
    VALUES (
        gen_random_uuid()::text,
        NEW.uuid,
        now_us,
        COALESCE(NEW.reservation, OLD.reservation),
        CASE
            WHEN OLD.provision_state IN ('deploying', 'wait call-back', 'deploy failed') THEN 'deploying'
            WHEN OLD.provision_state IN ('cleaning', 'clean wait', 'clean failed') THEN 'cleaning'
            WHEN OLD.provision_state = 'verifying' THEN 'verifying'
            WHEN OLD.provision_state IN ('inspecting', 'inspect wait', 'inspect failed') THEN 'introspection'
            WHEN OLD.provision_state IN ('rescuing', 'rescue wait', 'rescue failed', 'unrescuing') THEN 'rescue'
            WHEN OLD.provision_state IN ('servicing', 'service wait', 'service failed') THEN 'servicing'
            WHEN OLD.provision_state IN ('deleting', 'error') THEN 'deleting'
            WHEN OLD.provision_state = 'adopting' THEN 'adopting'
            ELSE 'UNKNOWN'
        END,
        'ERROR',
        NEW.last_error,
        NEW.provision_state,
        NEW.target_provision_state,
        CASE WHEN OLD.provision_updated_at IS NULL THEN NULL
             ELSE (now_us - OLD.provision_updated_at) / 1000000
        END
    );
    DELETE FROM node_history WHERE node_uuid = NEW.uuid AND id NOT IN (
        SELECT id FROM node_history WHERE node_uuid = NEW.uuid ORDER BY id DESC LIMIT 300);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER nodes_last_error_history AFTER UPDATE OF last_error ON nodes
FOR EACH ROW
WHEN (NEW.last_error IS NOT NULL AND NEW.last_error <> ''
      AND NEW.last_error IS DISTINCT FROM OLD.last_error)
EXECUTE FUNCTION nodes_last_error_history();
