-- The pgbench table, the same on every system. INTEGER PRIMARY KEY is the
-- rowid in SQLite and a btree primary key in PostgreSQL.
CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL);
-- pgbench's TPC-B tables (scale 1), for tpcb.sql; loaded by tpcb_load.sql.
CREATE TABLE pgbench_branches (bid INTEGER PRIMARY KEY, bbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_tellers (tid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, tbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TIMESTAMP, filler TEXT);
