-- Issue 18: a lock release in one round trip (SPEC §4.3, §4.5, §11).
--
-- ferric_release does what the release did in up to six statements: the
-- fenced fast path when nobody waits; otherwise it locks the node row, checks
-- the token, hands the lock to the first live waiter (dead and expired ones
-- ahead of it deleted), notifies the grantee's conductor when it is another
-- one, and returns the granted node row, so a grantee in the releasing
-- process needs no read of its own. Each statement of a VOLATILE PL/pgSQL
-- function takes a fresh READ COMMITTED snapshot: the waiter list is read
-- after the node row is locked, so it holds every committed waiter (an
-- enqueue locks the node row too), as the multi-statement release did.
--
-- The wake channel of a conductor: one definition, used by the listener
-- (LISTEN) and by every sender (pg_notify), schema-qualified so test schemas
-- stay apart; md5 keeps any hostname within the 63-byte identifier limit.
CREATE OR REPLACE FUNCTION ferric_wake_channel(conductor TEXT) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT 'ferric_wake_' || substr(md5(current_schema() || '/' || conductor), 1, 32)
$$;

CREATE OR REPLACE FUNCTION ferric_release(
    p_node TEXT, p_holder TEXT, p_task TEXT, p_epoch BIGINT, p_heartbeat_timeout_us BIGINT)
RETURNS TABLE (outcome TEXT, g_ticket BIGINT, g_conductor TEXT, g_task TEXT,
               g_removed BIGINT, g_node nodes)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_cur RECORD;
    v_head RECORD;
    v_found BOOLEAN;
    v_now BIGINT;
    v_upto BIGINT;
    v_removed BIGINT := 0;
    v_row nodes;
BEGIN
    UPDATE nodes SET reservation = NULL, lock_task = NULL, lock_purpose = NULL,
           lock_acquired_at = NULL
     WHERE uuid = p_node AND reservation = p_holder AND lock_task = p_task
       AND lock_epoch = p_epoch AND lock_waiters = 0;
    IF FOUND THEN
        RETURN QUERY SELECT 'released'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                            0::BIGINT, NULL::nodes;
        RETURN;
    END IF;
    SELECT reservation, lock_task, lock_epoch INTO v_cur
      FROM nodes WHERE uuid = p_node FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                            0::BIGINT, NULL::nodes;
        RETURN;
    END IF;
    IF v_cur.reservation IS DISTINCT FROM p_holder OR v_cur.lock_task IS DISTINCT FROM p_task
       OR v_cur.lock_epoch <> p_epoch THEN
        RETURN QUERY SELECT 'not_locked'::TEXT, NULL::BIGINT, v_cur.reservation::TEXT,
                            NULL::TEXT, 0::BIGINT, NULL::nodes;
        RETURN;
    END IF;
    v_now := CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT);
    SELECT w.ticket, w.conductor, w.task_id, w.purpose INTO v_head
      FROM lock_waiters w LEFT JOIN conductors c ON c.hostname = w.conductor
     WHERE w.node_uuid = p_node
       AND (w.deadline IS NULL OR w.deadline > v_now)
       AND COALESCE(c.online, FALSE)
       AND COALESCE(c.heartbeat_at >= v_now - p_heartbeat_timeout_us, FALSE)
     ORDER BY w.ticket LIMIT 1;
    v_found := FOUND;
    IF v_found THEN
        v_upto := v_head.ticket;
    ELSE
        SELECT MAX(ticket) INTO v_upto FROM lock_waiters WHERE node_uuid = p_node;
    END IF;
    IF v_upto IS NOT NULL THEN
        DELETE FROM lock_waiters WHERE node_uuid = p_node AND ticket <= v_upto;
        GET DIAGNOSTICS v_removed = ROW_COUNT;
    END IF;
    IF NOT v_found THEN
        UPDATE nodes SET reservation = NULL, lock_task = NULL, lock_purpose = NULL,
               lock_acquired_at = NULL, lock_waiters = lock_waiters - v_removed
         WHERE uuid = p_node;
        RETURN QUERY SELECT 'released'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                            v_removed, NULL::nodes;
        RETURN;
    END IF;
    UPDATE nodes SET reservation = v_head.conductor, lock_task = v_head.task_id,
           lock_purpose = v_head.purpose, lock_epoch = lock_epoch + 1,
           lock_acquired_at = v_now, lock_waiters = lock_waiters - v_removed
     WHERE uuid = p_node
    RETURNING * INTO v_row;
    IF v_head.conductor <> p_holder THEN
        -- Delivered when this transaction commits, i.e. with the grant.
        PERFORM pg_notify(ferric_wake_channel(v_head.conductor), p_node || ' ' || v_head.task_id);
    END IF;
    RETURN QUERY SELECT 'granted'::TEXT, v_head.ticket::BIGINT, v_head.conductor::TEXT,
                        v_head.task_id::TEXT, v_removed, v_row;
END
$$;
