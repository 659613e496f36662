#!/usr/bin/env bash
# psql against the cluster: -c, -f with ON_ERROR_STOP, a multi-statement
# string, \x, \timing, a multi-host string with target_session_attrs,
# errors' SQLSTATEs through :LAST_ERROR_SQLSTATE, and transaction blocks
# (BEGIN … COMMIT/ROLLBACK, the failed state, savepoints,
# ON_ERROR_ROLLBACK). Prints COMPAT lines; exits 1 if a feature failed. Env: RESQLITE_HOST, RESQLITE_PORTS,
# RESQLITE_LEADER_PORT, RESQLITE_FOLLOWER_PORT, RESQLITE_LEADER_ADDR,
# RESQLITE_USER, and for libpq PGPASSWORD, PGSSLMODE=verify-full,
# PGSSLROOTCERT, PGCHANNELBINDING=require (set by server/tests/compat.rs).
set -u
C=psql
HERE="$(cd "$(dirname "$0")" && pwd)"
H=$RESQLITE_HOST
LEADER="host=$H port=$RESQLITE_LEADER_PORT user=$RESQLITE_USER"
FOLLOWER="host=$H port=$RESQLITE_FOLLOWER_PORT user=$RESQLITE_USER"
n_ports=$(echo "$RESQLITE_PORTS" | tr ',' '\n' | wc -l)
hosts=$(yes "$H" | head -n "$n_ports" | paste -sd,)
MULTI="host=$hosts port=$RESQLITE_PORTS user=$RESQLITE_USER target_session_attrs=read-write"
failed=0

report() { # feature status note
    echo "COMPAT $C $1 $2 ${3:-}"
    if [ "$2" = fail ]; then failed=1; fi
}
# expect feature want_output psql-args… : runs psql -X -At and compares stdout.
expect() {
    local feature=$1 want=$2 got
    shift 2
    got=$(psql -X -At "$@" 2>&1)
    if [ "$got" = "$want" ]; then report "$feature" pass; else
        report "$feature" fail "got $(printf %q "$got"), want $(printf %q "$want")"
    fi
}
# sqlstate feature want sql : the SQLSTATE psql saw for sql on the leader.
sqlstate() {
    local got
    got=$(psql -X -At "$LEADER" -c "$3" -c '\echo :LAST_ERROR_SQLSTATE' 2>/dev/null)
    if [ "$got" = "$2" ]; then report "$1" pass; else report "$1" fail "got $(printf %q "$got"), want $2"; fi
}

expect connect 1 "$LEADER" -c "SELECT 1"
expect multi_host_leader "off
$RESQLITE_LEADER_PORT" "$MULTI" -c "SHOW transaction_read_only" -c '\echo :PORT'
expect create_table "CREATE TABLE" "$LEADER" -c \
    "CREATE TABLE ps_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)"

major=$(psql --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
if [ "$major" -ge 16 ]; then
    expect insert_bound_params "INSERT 0 1" "$LEADER" -c \
        "INSERT INTO ps_items (id, n, f, s, b, ok, z) VALUES (\$1, \$2, \$3, \$4, \$5, \$6, NULL) \\bind 1 -42 2.5 héllo '\\x0001feff' true \\g"
else
    # psql < 16 has no \bind: variables are interpolated client-side.
    # (A bytea value as '\x…' would come out of psql as E'\\x…', which is
    # text without a ::bytea cast; SQLite's X'…' blob literal is used here.)
    got=$(psql -X -At "$LEADER" -v n=-42 -v f=2.5 -v s=héllo -v b=0001feff -f - <<'SQL' 2>&1
INSERT INTO ps_items (id, n, f, s, b, ok, z) VALUES (1, :n, :f, :'s', X:'b', true, NULL);
SQL
)
    if [ "$got" = "INSERT 0 1" ]; then
        report insert_bound_params unsupported "psql $major has no \\bind (psql 16+); :'var' interpolation inserts fine"
    else
        report insert_bound_params fail "interpolated insert: $got"
    fi
fi

row=$(psql -X -At -F'|' -P null=NULL "$LEADER" -c "SELECT n, f, s, b, ok, z FROM ps_items WHERE id = 1" 2>&1 | tail -n 1)
check_field() { # feature index want
    local got
    got=$(echo "$row" | cut -d'|' -f"$2")
    if [ "$got" = "$3" ]; then report "$1" pass; else report "$1" fail "got $(printf %q "$got") in row $(printf %q "$row"), want $3"; fi
}
check_field read_integer 1 -42
check_field read_float 2 2.5
check_field read_text 3 héllo
check_field read_bytea 4 '\x0001feff'
check_field read_boolean 5 t
check_field read_null 6 NULL

# psql has no protocol-level prepare before psql 17 (\parse, \bind_named);
# SQL PREPARE is a statement ReSQLite does not support.
got=$(psql -X -At "$LEADER" -c "PREPARE q (int) AS SELECT \$1" -c '\echo :LAST_ERROR_SQLSTATE' 2>/dev/null)
if [ "$got" = "0A000" ]; then
    report prepared_repeat unsupported "psql $major cannot prepare at protocol level; SQL PREPARE/EXECUTE gets 0A000"
else
    report prepared_repeat fail "SQL PREPARE gave $(printf %q "$got"), want 0A000"
fi

sqlstate error_23505_unique 23505 "INSERT INTO ps_items (id) VALUES (1)"
sqlstate error_42601_syntax 42601 "INSERT INTO ps_items VALUE"
sqlstate error_0A000_nondeterministic 0A000 "INSERT INTO ps_items (id, n) VALUES (2, random())"

got=$(psql -X -At "$FOLLOWER" -c "INSERT INTO ps_items (id) VALUES (3)" -c '\echo :LAST_ERROR_SQLSTATE' 2>&1)
case "$got" in
*"not the leader; leader: $RESQLITE_LEADER_ADDR"*25006) report follower_25006_leader_addr pass ;;
*) report follower_25006_leader_addr fail "got $(printf %q "$got")" ;;
esac

# Expression columns (count(*), sum(…)) through the simple protocol.
expect read_expression_types "1|2.5" -F'|' "$LEADER" -c "SELECT count(*), sum(f) FROM ps_items WHERE id = 1"

# Transactions from scripts, as psql users write them. Each run's output
# (command tags, \echo) is compared, then what a new session sees.
psql -X -q "$LEADER" -c "CREATE TABLE ps_txn (id INTEGER PRIMARY KEY, s TEXT)" >/dev/null 2>&1
committed() { # lo hi: the ids a new session sees, comma-separated
    psql -X -At "$LEADER" -c "SELECT id FROM ps_txn WHERE id BETWEEN $1 AND $2 ORDER BY id" 2>&1 | paste -sd,
}
script() { # runs stdin as a script on the leader; stdout only (errors go to stderr)
    psql -X -At "$LEADER" -f - 2>/dev/null
}
# txn feature want_output got_output want_committed lo hi
txn() {
    local now
    now=$(committed "$5" "$6")
    if [ "$3" = "$2" ] && [ "$now" = "$4" ]; then report "$1" pass; else
        report "$1" fail "output $(printf %q "$3"), want $(printf %q "$2"); committed rows $(printf %q "$now"), want $(printf %q "$4")"
    fi
}

# Inside the block another session (\!) sees none of its rows.
got=$(PS_LEADER=$LEADER script <<'SQL'
BEGIN;
INSERT INTO ps_txn VALUES (1, 'a');
INSERT INTO ps_txn VALUES (2, 'b');
SELECT count(*) FROM ps_txn;
\! psql -X -At "$PS_LEADER" -c "SELECT count(*) FROM ps_txn"
COMMIT;
SQL
)
txn txn_commit "BEGIN
INSERT 0 1
INSERT 0 1
2
0
COMMIT" "$got" "1,2" 1 9

got=$(script <<'SQL'
BEGIN;
INSERT INTO ps_txn VALUES (10, 'gone');
ROLLBACK;
SQL
)
txn txn_rollback "BEGIN
INSERT 0 1
ROLLBACK" "$got" "" 10 19

# An error aborts the block: the next statement gets 25P02, and COMMIT ends
# the failed block answering ROLLBACK.
got=$(script <<'SQL'
BEGIN;
INSERT INTO ps_txn VALUES (30, 'gone');
INSERT INTO ps_txn VALUES (30, 'dup');
\echo :LAST_ERROR_SQLSTATE
SELECT 1;
\echo :LAST_ERROR_SQLSTATE
COMMIT;
SQL
)
txn txn_error_25P02 "BEGIN
INSERT 0 1
23505
25P02" "$(echo "$got" | head -n 4)" "" 30 39
txn txn_failed_commit_rollback "ROLLBACK" "$(echo "$got" | tail -n +5)" "" 30 39

got=$(script <<'SQL'
BEGIN;
INSERT INTO ps_txn VALUES (50, 'outer');
SAVEPOINT a;
INSERT INTO ps_txn VALUES (51, 'rolled back');
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
INSERT INTO ps_txn VALUES (52, 'released');
RELEASE SAVEPOINT b;
SAVEPOINT c;
INSERT INTO ps_txn VALUES (50, 'dup');
ROLLBACK TO SAVEPOINT c;
INSERT INTO ps_txn VALUES (53, 'after the error');
COMMIT;
SQL
)
txn txn_savepoint "BEGIN
INSERT 0 1
SAVEPOINT
INSERT 0 1
ROLLBACK
SAVEPOINT
INSERT 0 1
RELEASE
SAVEPOINT
ROLLBACK
INSERT 0 1
COMMIT" "$got" "50,52,53" 50 59

# ON_ERROR_ROLLBACK: psql wraps each statement of a block in its own
# savepoint, so an error does not abort the block.
got=$(script <<'SQL'
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO ps_txn VALUES (40, 'kept');
INSERT INTO ps_txn VALUES (40, 'dup');
INSERT INTO ps_txn VALUES (41, 'after the error');
COMMIT;
SQL
)
txn txn_on_error_rollback "BEGIN
INSERT 0 1
INSERT 0 1
COMMIT" "$got" "40,41" 40 49

# Several statements in one -c string are one implicit transaction: an
# error in the last undoes the first (psql 15+ shows each statement's
# result up to the error).
got=$(psql -X -At "$LEADER" -c "INSERT INTO ps_txn VALUES (60, 'gone'); INSERT INTO ps_txn VALUES (60, 'dup')" -c '\echo :LAST_ERROR_SQLSTATE' 2>/dev/null)
txn multi_statement_atomic "INSERT 0 1
23505" "$got" "" 60 69

# -f: a script that succeeds, then one that stops at its failing statement.
got=$(psql -X -q -At "$LEADER" -v ON_ERROR_STOP=1 -f "$HERE/ok.sql" 2>&1)
status=$?
want=2
if [ $status -eq 0 ] && [ "$got" = "$want" ]; then ok1=1; else ok1=0; fi
got2=$(psql -X -At "$LEADER" -v ON_ERROR_STOP=1 -f "$HERE/stops.sql" 2>&1)
status2=$?
after=$(psql -X -At "$LEADER" -c "SELECT count(*) FROM ps_script" 2>&1)
if [ $ok1 -eq 1 ] && [ $status2 -eq 3 ] && [ "$after" = 3 ]; then
    report file_on_error_stop pass
else
    report file_on_error_stop fail "ok.sql: $status $(printf %q "$got"); stops.sql: $status2 $(printf %q "$got2"); rows after: $after"
fi

# One -c string with several statements: one simple Query message.
expect multi_statement_string "10" -q "$LEADER" -c \
    "CREATE TABLE ps_multi (a INTEGER); INSERT INTO ps_multi VALUES (1); INSERT INTO ps_multi VALUES (9); SELECT sum(a) FROM ps_multi"

got=$(psql -X "$LEADER" -c '\x on' -c "SELECT id, s FROM ps_items WHERE id = 1" 2>&1)
case "$got" in
*"-[ RECORD 1 ]"*"id | 1"*"s  | héllo"*) report expanded_output pass ;;
*) report expanded_output fail "got $(printf %q "$got")" ;;
esac

got=$(psql -X -At "$LEADER" -c '\timing on' -c "SELECT 1" 2>&1)
if echo "$got" | grep -Eq '^Time: [0-9.]+ ms'; then report timing pass; else
    report timing fail "got $(printf %q "$got")"
fi

# PostgreSQL's escape-string literal E'…', which libpq's PQescapeLiteral
# (psql's :'var') emits for any value with a backslash.
got=$(psql -X -At "$LEADER" -c "SELECT E'a\\\\b'" -c '\echo :LAST_ERROR_SQLSTATE' 2>/dev/null)
# The server rewrites E'…' into a plain SQLite literal (server/src/sql/pg_syntax.rs).
if [ "$(echo "$got" | head -n 1)" = 'a\b' ]; then report escape_string_literal pass; else
    report escape_string_literal fail "E'a\\\\b' should read back as a\\b: got $(echo "$got" | tr '\n' ' ')"
fi

got=$(psql -X -At "$LEADER" -c '\d ps_items' 2>&1)
status=$?
if [ $status -ne 0 ]; then
    report catalog_queries unsupported "\\d needs pg_catalog, not emulated yet: $(echo "$got" | head -n 1)"
else
    report catalog_queries pass "\\d works: update docs/compat.md"
fi

exit $failed
