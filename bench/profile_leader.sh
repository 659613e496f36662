#!/usr/bin/env bash
# Profiles the leader of a 3-node cluster under one pgbench workload:
# the same cluster and data as bench/quick_ab.sh (ports 1660x/1760x),
# `perf record --call-graph dwarf` on the leader for the whole run, then
# a flat and an inclusive report of the leader's samples.
#
#   bench/profile_leader.sh BINARY read|write|tpcb simple|prepared CLIENTS [seconds] [outdir]
#
# Writes OUTDIR/perf.data, OUTDIR/self.txt (self time per symbol),
# OUTDIR/children.txt (inclusive time) and OUTDIR/pgbench.txt.
set -euo pipefail
bin=$1 script=$2 mode=$3 clients=$4 secs=${5:-8} out=${6:-/tmp/resqlite-profile}
mkdir -p "$out"
dir=$(mktemp -d /tmp/resqlite-prof-XXXXXX)
peers="--peer 1=127.0.0.1:17601,127.0.0.1:16601 --peer 2=127.0.0.1:17602,127.0.0.1:16602 --peer 3=127.0.0.1:17603,127.0.0.1:16603"
pids=()
cleanup() {
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for i in 1 2 3; do
    # shellcheck disable=SC2086
    RESQLITE_LOG=warn "$bin" serve --id $i --data-dir "$dir/n$i" --listen 127.0.0.1:1660$i \
        --raft-listen 127.0.0.1:1760$i $peers >"$dir/log$i" 2>&1 &
    pids+=($!)
done
port="" leader=""
for _ in $(seq 50); do
    for i in 1 2 3; do
        ro=$(psql -h 127.0.0.1 -p 1660$i -U resqlite -Atc 'SHOW transaction_read_only' 2>/dev/null || true)
        [ "$ro" = off ] && port=1660$i && leader=${pids[$((i - 1))]}
    done
    [ -n "$port" ] && break
    sleep 0.2
done
[ -n "$port" ] || { echo "no leader" >&2; exit 1; }
db=(-h 127.0.0.1 -p "$port" -U resqlite)
psql "${db[@]}" -qc "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
psql "${db[@]}" -qc "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) INSERT INTO kv SELECT x, x FROM c"
printf '\\set k random(1, 100000)\nSELECT v FROM kv WHERE k = :k;\n' >"$dir/read.sql"
printf '\\set k random(1, 100000)\nINSERT INTO kv VALUES (:k, :k) ON CONFLICT (k) DO UPDATE SET v = excluded.v;\n' >"$dir/write.sql"
if [ "$script" = tpcb ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    grep -v '^CREATE TABLE kv' "$here/pgbench/schema.sql" | psql "${db[@]}" -q
    psql "${db[@]}" -q -f "$here/pgbench/tpcb_load.sql"
    cp "$here/pgbench/tpcb.sql" "$dir/tpcb.sql"
fi
# 499 Hz keeps the dwarf stacks of a few seconds on 2 cores to a few hundred MB.
perf record -F 499 --call-graph dwarf,16384 -p "$leader" -o "$out/perf.data" -- sleep $((secs + 1)) \
    2>"$out/perf-record.log" &
perf_pid=$!
sleep 0.5
pgbench "${db[@]}" -n -j 2 -T "$secs" -c "$clients" -M "$mode" -f "$dir/$script.sql" >"$out/pgbench.txt" 2>&1
wait "$perf_pid" || true
grep -E 'tps =' "$out/pgbench.txt"
perf report -i "$out/perf.data" --no-children --percent-limit 0.7 --stdio -g none \
    --sort symbol >"$out/self.txt" 2>/dev/null
perf report -i "$out/perf.data" --children --percent-limit 2 --stdio -g none \
    --sort symbol >"$out/children.txt" 2>/dev/null
echo "reports in $out"
