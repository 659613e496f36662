-- pgbench -n -f mixed.sql: TPC-B-like, without BEGIN/END (each statement
-- commits on its own: ReSQLite has no multi-statement transactions yet).
\set aid random(1, 1000)
\set delta random(-5000, 5000)
UPDATE pb_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pb_accounts WHERE aid = :aid;
INSERT INTO pb_history (aid, delta, note) VALUES (:aid, :delta, 'pgbench');
