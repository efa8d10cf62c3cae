-- Node list pages at 100,000 nodes (issue 18). A page is
-- `WHERE <filters> AND uuid > $marker ORDER BY uuid LIMIT n`; an index that
-- matches a filter but not the order made the planner fetch every matching
-- row and sort them for each page, so a full walk grew with the square of
-- the fleet (100,000 nodes: 16.7 s on SQLite, 21.5 s on PostgreSQL through
-- HTTP, ten times the 10,000-node walk). (SQLite has no 0008: that
-- migration is PostgreSQL's ferric_release function.)

-- Every default list hides child nodes (`parent_node IS NULL`, Ironic 1.83):
-- the parent index only serves lookups of a parent's children.
DROP INDEX nodes_parent_node_idx;
CREATE INDEX nodes_parent_node_idx ON nodes (parent_node) WHERE parent_node IS NOT NULL;

-- Periodic jobs page through their conductor group in uuid order.
DROP INDEX nodes_conductor_group_idx;
CREATE INDEX nodes_conductor_group_idx ON nodes (conductor_group, uuid);

-- The locked nodes: stale-lock recovery lists them every recovery_interval
-- (`Store::list_locks`: reservation set or waiters queued). It read the
-- whole table: 1.1 s at 100,000 nodes on SQLite, every 10 s. The predicate
-- is the query's own WHERE clause, so both planners use the partial index.
CREATE INDEX nodes_locked_idx ON nodes (uuid) WHERE reservation IS NOT NULL OR lock_waiters > 0;
