-- The pgbench table, the same on every system. INTEGER PRIMARY KEY is the
-- rowid in SQLite and a btree primary key in PostgreSQL.
CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL);
