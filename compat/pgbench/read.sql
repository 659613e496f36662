-- pgbench -n -f read.sql: one linearizable read per transaction.
\set aid random(1, 1000)
SELECT abalance FROM pb_accounts WHERE aid = :aid;
