-- pgbench -i's rows at scale 1 (1 branch, 10 tellers, 100,000 accounts),
-- written so that PostgreSQL and ReSQLite load them with the same SQL.
INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0);
INSERT INTO pgbench_tellers (tid, bid, tbalance)
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10) SELECT i, 1, 0 FROM s;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100000)
  SELECT i, 1, 0, '                                                                                    ' FROM s;
