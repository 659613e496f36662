#!/usr/bin/env bash
# A quick A/B of two resqlite binaries on the same machine, for one change:
# a 3-node cluster on loopback, 100,000 rows, pgbench reads (8 clients,
# -M simple and prepared) and upserts (-M prepared, 1 and 32 clients).
# Run it alternately for the two binaries, twice each, and compare; the
# full comparison with PostgreSQL is bench/bench.py.
#
# Besides tps, each cell prints the CPU time the leader and the whole
# cluster spent per transaction (utime + stime from /proc, in µs): on a
# shared machine tps swings with other people's load, CPU per
# transaction much less.
#
#   bench/quick_ab.sh target/release/resqlite after [seconds]
#   ONLY=read bench/quick_ab.sh target/release/resqlite after [seconds]
set -euo pipefail
bin=$1 label=$2 secs=${3:-8}
dir=$(mktemp -d /tmp/resqlite-ab-XXXXXX)
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
port=""
for _ in $(seq 50); do
    for i in 1 2 3; do
        ro=$(psql -h 127.0.0.1 -p 1660$i -U resqlite -Atc 'SHOW transaction_read_only' 2>/dev/null || true)
        [ "$ro" = off ] && port=1660$i
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
leader=${pids[$((${port: -1} - 1))]}
# CPU ticks (utime + stime) of the given processes, summed.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
tps() {
    local l0 c0 out tx
    l0=$(ticks "$leader") c0=$(ticks "${pids[@]}")
    out=$(pgbench "${db[@]}" -n -j 2 -T "$secs" "$@" 2>&1) || true
    tx=$(grep -oP 'actually processed: \K[0-9]+' <<<"$out" || echo 0)
    if [ "$tx" -gt 0 ]; then
        local hz us_leader us_all
        hz=$(getconf CLK_TCK)
        us_leader=$(( ($(ticks "$leader") - l0) * 1000000 / hz / tx ))
        us_all=$(( ($(ticks "${pids[@]}") - c0) * 1000000 / hz / tx ))
        echo "tps=$(grep -oP 'tps = \K[0-9]+' <<<"$out") cpu_us/tx leader=$us_leader cluster=$us_all"
    else
        echo "failed"
    fi
}
echo "$label read  simple   c8  $(tps -c 8 -M simple -f "$dir/read.sql")"
echo "$label read  prepared c8  $(tps -c 8 -M prepared -f "$dir/read.sql")"
# ONLY=read skips the writes (a read-path change).
[ "${ONLY:-}" = read ] && exit 0
echo "$label write prepared c1  $(tps -c 1 -M prepared -f "$dir/write.sql")"
echo "$label write prepared c32 $(tps -c 32 -M prepared -f "$dir/write.sql")"
