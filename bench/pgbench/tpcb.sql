-- tpcb: pgbench's built-in TPC-B-like transaction, as a custom script on
-- the tables of tpcb_load.sql (scale 1). One difference: mtime is NULL,
-- because ReSQLite refuses CURRENT_TIMESTAMP in a write (replicas would
-- diverge); PostgreSQL gets the same statement.
\set aid random(1, 100000)
\set bid 1
\set tid random(1, 10)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, NULL);
END;
