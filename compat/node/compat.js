// node-postgres (pg) against the cluster, in its own idiom: a Pool, $n
// parameters, named queries ({ name, text, values }) for prepared
// statements, err.code for the SQLSTATE, and transactions as its docs
// show them (BEGIN/COMMIT/ROLLBACK through client.query). node-postgres takes one host per
// connection (no multi-host string): reported unsupported. It logs in with
// the password (SCRAM-SHA-256) over TLS, verifying the server's certificate
// and name against the cluster's CA (PGPASSWORD and PGSSLROOTCERT from the
// harness). Run by server/tests/compat.rs; prints COMPAT lines, exits 1 if
// a feature failed.
'use strict';
const fs = require('node:fs');
const { Client, Pool } = require('pg');
const assert = require('node:assert');

const C = 'node-postgres';
const env = process.env;
const host = env.RESQLITE_HOST;
const user = env.RESQLITE_USER;
const leaderAddr = env.RESQLITE_LEADER_ADDR;
let failed = false;

function line(feature, status, note = '') {
  console.log(`COMPAT ${C} ${feature} ${status} ${note}`.trimEnd());
  if (status === 'fail') failed = true;
}
function oneLine(e) {
  return `${e.code || e.name}: ${String(e.message).replace(/\n/g, ' ')}`;
}
async function check(feature, fn, want) {
  try {
    const got = await fn();
    assert.deepStrictEqual(got, want);
    line(feature, 'pass');
  } catch (e) {
    line(feature, 'fail', e instanceof assert.AssertionError
      ? `got ${JSON.stringify(e.actual)}, want ${JSON.stringify(e.expected)}` : oneLine(e));
  }
}
async function sqlstate(feature, fn, want, contains) {
  try {
    await fn();
    line(feature, 'fail', `succeeded, want ${want}`);
  } catch (e) {
    if (e.code === want && (!contains || String(e.message).includes(contains))) line(feature, 'pass');
    else line(feature, 'fail', oneLine(e));
  }
}
// rejectUnauthorized (Node's default) with only our CA: verify-full.
const ssl = { ca: fs.readFileSync(env.PGSSLROOTCERT), rejectUnauthorized: true };
function config(port) {
  return {
    host, port: Number(port), user, database: user, password: env.PGPASSWORD, ssl,
    connectionTimeoutMillis: 5000,
  };
}

async function main() {
  const pool = new Pool({ ...config(env.RESQLITE_LEADER_PORT), max: 2 });
  await check('connect', async () => Number((await pool.query('SELECT 1 AS one')).rows[0].one), 1);
  line('multi_host_leader', 'unsupported', 'node-postgres connects to one host; no target_session_attrs');
  await check('create_table', async () => (await pool.query(
    'CREATE TABLE nd_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)')).command,
  'CREATE');
  const blob = Buffer.from([0, 1, 0xfe, 0xff]);
  await check('insert_bound_params', async () => (await pool.query(
    'INSERT INTO nd_items (id, n, f, s, b, ok, z) VALUES ($1, $2, $3, $4, $5, $6, $7)',
    [1, -42, 2.5, 'héllo', blob, true, null])).rowCount, 1);
  let row;
  try {
    row = (await pool.query('SELECT n, f, s, b, ok, z FROM nd_items WHERE id = $1', [1])).rows[0];
  } catch (e) {
    row = e;
  }
  // node-postgres returns int8 as a string (it does not fit a JS number);
  // the idiom is BigInt/Number on the string.
  const reads = [
    ['read_integer', (r) => [r.n, BigInt(r.n)], ['-42', -42n]],
    ['read_float', (r) => r.f, 2.5],
    ['read_text', (r) => r.s, 'héllo'],
    ['read_bytea', (r) => r.b, blob],
    ['read_boolean', (r) => r.ok, true],
    ['read_null', (r) => r.z, null],
  ];
  for (const [feature, get, want] of reads) {
    if (row instanceof Error) line(feature, 'fail', `select failed: ${oneLine(row)}`);
    else await check(feature, async () => get(row), want);
  }

  // Result columns that are expressions (no declared column type): count(*)
  // is int8 (a string in node-postgres, as from PostgreSQL), sum of a REAL
  // column float8 (a number).
  await check('read_expression_types', async () => {
    const r = (await pool.query('SELECT count(*) AS c, sum(f) AS s FROM nd_items WHERE id = $1', [1])).rows[0];
    return [r.c, r.s];
  }, ['1', 2.5]);

  // A named query is parsed once per connection, then only bound and executed.
  await check('prepared_repeat', async () => {
    const client = await pool.connect();
    try {
      for (let i = 100; i < 200; i++) {
        await client.query({ name: 'nd-ins', text: 'INSERT INTO nd_items (id, n, s) VALUES ($1, $2, $3)', values: [i, i * 2, `row ${i}`] });
      }
      let sum = 0;
      for (let i = 100; i < 200; i++) {
        const r = await client.query({ name: 'nd-sel', text: 'SELECT n FROM nd_items WHERE id = $1', values: [i] });
        sum += Number(r.rows[0].n);
      }
      return sum;
    } finally {
      client.release();
    }
  }, 29900);

  await sqlstate('error_23505_unique', () => pool.query('INSERT INTO nd_items (id) VALUES ($1)', [1]), '23505');
  await sqlstate('error_42601_syntax', () => pool.query('INSERT INTO nd_items VALUE'), '42601');
  await sqlstate('error_0A000_nondeterministic',
    () => pool.query('INSERT INTO nd_items (id, n) VALUES (2, random())'), '0A000');
  await sqlstate('follower_25006_leader_addr', async () => {
    const f = new Client(config(env.RESQLITE_FOLLOWER_PORT));
    await f.connect();
    try {
      await f.query('INSERT INTO nd_items (id) VALUES (3)');
    } finally {
      await f.end();
    }
  }, '25006', `not the leader; leader: ${leaderAddr}`);

  // Transactions the node-postgres way: BEGIN/COMMIT/ROLLBACK through
  // client.query on one client checked out of the pool, each checked by
  // what a new connection sees afterwards.
  await pool.query('CREATE TABLE nd_txn (id INTEGER PRIMARY KEY, s TEXT)');
  const committedIds = async (lo, hi) => {
    const f = new Client(config(env.RESQLITE_LEADER_PORT));
    await f.connect();
    try {
      const r = await f.query('SELECT id FROM nd_txn WHERE id >= $1 AND id <= $2 ORDER BY id', [lo, hi]);
      return r.rows.map((row) => Number(row.id));
    } finally {
      await f.end();
    }
  };
  const insert = (client, id) => client.query('INSERT INTO nd_txn (id, s) VALUES ($1, $2)', [id, `row ${id}`]);
  const sqlstateOf = async (fn) => {
    try {
      await fn();
      return 'no error';
    } catch (e) {
      return e.code || oneLine(e);
    }
  };
  const withClient = async (fn) => {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  };
  await check('txn_commit', () => withClient(async (t) => {
    const tags = [(await t.query('BEGIN')).command];
    await insert(t, 1);
    await insert(t, 2);
    const inside = [Number((await t.query('SELECT count(*) AS n FROM nd_txn')).rows[0].n), await committedIds(1, 9)];
    tags.push((await t.query('COMMIT')).command);
    return [tags, inside, await committedIds(1, 9)];
  }), [['BEGIN', 'COMMIT'], [2, []], [1, 2]]);
  await check('txn_rollback', () => withClient(async (t) => {
    await t.query('BEGIN');
    await insert(t, 10);
    const tag = (await t.query('ROLLBACK')).command;
    await insert(t, 11); // autocommit again
    return [tag, await committedIds(10, 19)];
  }), ['ROLLBACK', [11]]);
  // An error inside the block: every statement then gets 25P02 until
  // ROLLBACK (the pattern node-postgres documents: catch, ROLLBACK, rethrow).
  await check('txn_error_25P02', () => withClient(async (t) => {
    await t.query('BEGIN');
    await insert(t, 30);
    const first = await sqlstateOf(() => insert(t, 30));
    const then = await sqlstateOf(() => t.query('SELECT 1'));
    const tag = (await t.query('ROLLBACK')).command;
    const after = Number((await t.query('SELECT 1 AS one')).rows[0].one);
    return [first, then, tag, after, await committedIds(30, 39)];
  }), ['23505', '25P02', 'ROLLBACK', 1, []]);
  // COMMIT of a failed transaction ends it and answers ROLLBACK.
  await check('txn_failed_commit_rollback', () => withClient(async (t) => {
    await t.query('BEGIN');
    await insert(t, 40);
    await sqlstateOf(() => insert(t, 40));
    const tag = (await t.query('COMMIT')).command;
    return [tag, await committedIds(40, 49)];
  }), ['ROLLBACK', []]);
  await check('txn_savepoint', () => withClient(async (t) => {
    await t.query('BEGIN');
    await insert(t, 50);
    await t.query('SAVEPOINT a');
    await insert(t, 51);
    await t.query('ROLLBACK TO SAVEPOINT a');
    await t.query('SAVEPOINT b');
    await insert(t, 52);
    await t.query('RELEASE SAVEPOINT b');
    await t.query('SAVEPOINT c');
    const dup = await sqlstateOf(() => insert(t, 50));
    await t.query('ROLLBACK TO SAVEPOINT c'); // the error spares the outer transaction
    await insert(t, 53);
    await t.query('COMMIT');
    return [dup, await committedIds(50, 59)];
  }), ['23505', [50, 52, 53]]);
  await pool.end();
}

main().then(() => process.exit(failed ? 1 : 0), (e) => {
  console.error(e);
  process.exit(2);
});
