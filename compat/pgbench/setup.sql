-- The pgbench tables: 1000 accounts and an append-only history.
CREATE TABLE pb_accounts (aid INTEGER PRIMARY KEY, abalance INTEGER NOT NULL, filler TEXT);
INSERT INTO pb_accounts (aid, abalance, filler)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
    SELECT i, 0, 'filler' FROM n;
CREATE TABLE pb_history (hid INTEGER PRIMARY KEY, aid INTEGER NOT NULL, delta INTEGER NOT NULL, note TEXT);
