-- write: an upsert on a random key (random() is pgbench's, computed in the
-- client, so the statement itself is deterministic).
\set k random(1, :rows)
\set v random(1, 1000000)
INSERT INTO kv (k, v) VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = excluded.v;
