-- pgbench -n -f write.sql: one replicated UPDATE per transaction.
\set aid random(1, 1000)
\set delta random(-5000, 5000)
UPDATE pb_accounts SET abalance = abalance + :delta WHERE aid = :aid;
