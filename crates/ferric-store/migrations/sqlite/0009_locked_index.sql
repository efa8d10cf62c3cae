-- The locked nodes, indexed (issue 18): stale-lock recovery lists them
-- every recovery_interval (`Store::list_locks`: reservation set or waiters
-- queued). Without this index that list read the whole nodes table: 1.1 s
-- at 100,000 nodes on SQLite, every 10 s. The predicate is the query's own
-- WHERE clause, so both planners use the partial index. (SQLite has no
-- 0008: that migration is PostgreSQL's ferric_release function.)
CREATE INDEX nodes_locked_idx ON nodes (uuid) WHERE reservation IS NOT NULL OR lock_waiters > 0;
