#!/usr/bin/env bash
# pgbench with custom scripts (write, read, mixed; -n) in each query mode
# (-M simple, extended, prepared) through the multi-host connection string,
# each run ending with 0 failed transactions. Prints COMPAT lines; exits 1
# if a feature failed. Env: see compat/psql/run.sh. RESQLITE_PGBENCH_SECONDS
# sets the length of each run (default 2).
set -u
C=pgbench
HERE="$(cd "$(dirname "$0")" && pwd)"
H=$RESQLITE_HOST
SECS=${RESQLITE_PGBENCH_SECONDS:-2}
LEADER="host=$H port=$RESQLITE_LEADER_PORT user=$RESQLITE_USER"
FOLLOWER="host=$H port=$RESQLITE_FOLLOWER_PORT user=$RESQLITE_USER"
n_ports=$(echo "$RESQLITE_PORTS" | tr ',' '\n' | wc -l)
hosts=$(yes "$H" | head -n "$n_ports" | paste -sd,)
MULTI="host=$hosts port=$RESQLITE_PORTS user=$RESQLITE_USER target_session_attrs=read-write"
failed=0
report() {
    echo "COMPAT $C $1 $2 ${3:-}"
    if [ "$2" = fail ]; then failed=1; fi
}

if ! out=$(psql -X -q -v ON_ERROR_STOP=1 "$LEADER" -f "$HERE/setup.sql" 2>&1); then
    echo "setup failed: $out" >&2
    exit 2
fi

# The first run goes through the multi-host string; it must land on the
# leader (a follower would fail every transaction with 25006).
first=1
prepared_ok=1
for mode in simple extended prepared; do
    for script in write read mixed; do
        conn=$LEADER
        if [ $first -eq 1 ]; then conn=$MULTI; fi
        out=$(pgbench -n -M "$mode" -c 2 -j 1 -T "$SECS" -f "$HERE/$script.sql" "$conn" 2>&1)
        status=$?
        processed=$(echo "$out" | sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p')
        failures=$(echo "$out" | sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p')
        tps=$(echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
        if [ $status -eq 0 ] && [ "${processed:-0}" -gt 0 ] && [ "${failures:-x}" = 0 ]; then
            report "${script}_${mode}" pass
            if [ $first -eq 1 ]; then
                report connect pass
                report multi_host_leader pass
            fi
        else
            if [ "$mode" = prepared ]; then prepared_ok=0; fi
            report "${script}_${mode}" fail "exit $status, processed ${processed:-?}, failed ${failures:-?}: $(echo "$out" | grep -m1 -iE 'error|fatal')"
            if [ $first -eq 1 ]; then
                report connect fail "see ${script}_${mode}"
                report multi_host_leader fail "see ${script}_${mode}"
            fi
        fi
        echo "$script -M $mode: ${processed:-?} transactions, ${tps:-?} tps" >&2
        first=0
    done
done
# -M prepared re-executes one named statement per script line.
if [ "$prepared_ok" -eq 1 ]; then report prepared_repeat pass "the -M prepared runs"; else
    report prepared_repeat fail "see the *_prepared runs"
fi

out=$(pgbench -n -t 1 -f "$HERE/write.sql" "$FOLLOWER" 2>&1)
status=$?
if [ $status -ne 0 ] && echo "$out" | grep -q "not the leader; leader: $RESQLITE_LEADER_ADDR"; then
    report follower_25006_leader_addr pass "pgbench aborts the client with the leader's address (it prints no SQLSTATE)"
else
    report follower_25006_leader_addr fail "exit $status: $(echo "$out" | grep -m1 -iE 'error|fatal')"
fi
exit $failed
