-- mixed: 90 % point reads, 10 % upserts, chosen per transaction.
\set k random(1, :rows)
\set r random(1, 10)
\if :r = 1
\set v random(1, 1000000)
INSERT INTO kv (k, v) VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = excluded.v;
\else
SELECT v FROM kv WHERE k = :k;
\endif
