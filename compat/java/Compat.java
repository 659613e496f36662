// pgjdbc (Debian's libpostgresql-jdbc-java) against the cluster, in its own
// idiom: a jdbc:postgresql URL over all three hosts with
// targetServerType=primary, PreparedStatement with setters and typed
// getters (pgjdbc switches to a named server-side statement after
// prepareThreshold executions), SQLException.getSQLState(). Then
// transactions after setAutoCommit(false): commit(), rollback(), the failed
// state (25P02), the Savepoint API and autosave=always, each checked by
// what a new connection sees afterwards. It logs in with the password
// (SCRAM-SHA-256) over TLS with sslmode=verify-full against the cluster's
// CA (PEM, read by pgjdbc itself), both given by the harness as PGPASSWORD
// and PGSSLROOTCERT. Compiled and run by server/tests/compat.rs.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Arrays;
import java.util.Objects;
import java.util.Properties;

public class Compat {
    static final String C = "pgjdbc";
    static boolean failed = false;
    static final String HOST = System.getenv("RESQLITE_HOST");
    static final String USER = System.getenv("RESQLITE_USER");
    static final String LEADER_ADDR = System.getenv("RESQLITE_LEADER_ADDR");

    interface Body<T> {
        T run() throws Exception;
    }

    static void line(String feature, String status, String note) {
        System.out.println(("COMPAT " + C + " " + feature + " " + status + " " + note).trim());
        if (status.equals("fail")) failed = true;
    }

    static String oneLine(Throwable e) {
        String m = String.valueOf(e.getMessage()).replace('\n', ' ');
        return e.getClass().getSimpleName() + ": " + m;
    }

    static <T> void check(String feature, Body<T> body, T want) {
        try {
            T got = body.run();
            boolean same = (got instanceof byte[] && want instanceof byte[])
                ? Arrays.equals((byte[]) got, (byte[]) want)
                : Objects.equals(got, want);
            if (same) line(feature, "pass", "");
            else line(feature, "fail", "got " + show(got) + ", want " + show(want));
        } catch (Exception e) {
            line(feature, "fail", oneLine(e));
        }
    }

    static String show(Object o) {
        if (o instanceof byte[]) return Arrays.toString((byte[]) o);
        return o == null ? "null" : o + " (" + o.getClass().getSimpleName() + ")";
    }

    /** Passes when body throws an SQLException with SQLSTATE want (and a message containing contains). */
    static void sqlstate(String feature, Body<?> body, String want, String contains) {
        try {
            body.run();
            line(feature, "fail", "succeeded, want " + want);
        } catch (SQLException e) {
            String msg = String.valueOf(e.getMessage());
            if (want.equals(e.getSQLState()) && (contains == null || msg.contains(contains))) line(feature, "pass", "");
            else line(feature, "fail", "got " + e.getSQLState() + " " + oneLine(e));
        } catch (Exception e) {
            line(feature, "fail", oneLine(e));
        }
    }

    static Connection connect(String hostPorts, String extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", USER);
        p.setProperty("password", System.getenv("PGPASSWORD"));
        p.setProperty("ssl", "true");
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", System.getenv("PGSSLROOTCERT"));
        p.setProperty("connectTimeout", "5");
        return DriverManager.getConnection("jdbc:postgresql://" + hostPorts + "/" + USER + extra, p);
    }

    public static void main(String[] args) throws Exception {
        String leader = HOST + ":" + System.getenv("RESQLITE_LEADER_PORT");
        String follower = HOST + ":" + System.getenv("RESQLITE_FOLLOWER_PORT");
        StringBuilder all = new StringBuilder();
        for (String port : System.getenv("RESQLITE_PORTS").split(",")) {
            if (all.length() > 0) all.append(',');
            all.append(HOST).append(':').append(port);
        }

        Connection db;
        try {
            db = connect(leader, "");
            line("connect", "pass", "");
        } catch (Exception e) {
            line("connect", "fail", oneLine(e));
            System.exit(1);
            return;
        }

        check("multi_host_leader", () -> {
            try (Connection m = connect(all.toString(), "?targetServerType=primary");
                 Statement s = m.createStatement();
                 ResultSet rs = s.executeQuery("SHOW transaction_read_only")) {
                rs.next();
                return rs.getString(1);
            }
        }, "off");

        check("create_table", () -> {
            try (Statement s = db.createStatement()) {
                return s.executeUpdate("CREATE TABLE jd_items (id INTEGER PRIMARY KEY, n INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN, z TEXT)");
            }
        }, 0);

        byte[] blob = new byte[] {0, 1, (byte) 0xfe, (byte) 0xff};
        check("insert_bound_params", () -> {
            try (PreparedStatement ps = db.prepareStatement(
                    "INSERT INTO jd_items (id, n, f, s, b, ok, z) VALUES (?, ?, ?, ?, ?, ?, ?)")) {
                ps.setLong(1, 1);
                ps.setLong(2, -42);
                ps.setDouble(3, 2.5);
                ps.setString(4, "héllo");
                ps.setBytes(5, blob);
                ps.setBoolean(6, true);
                ps.setNull(7, java.sql.Types.VARCHAR);
                return ps.executeUpdate();
            }
        }, 1);

        Object[] row = new Object[6];
        Exception readErr = null;
        try (PreparedStatement ps = db.prepareStatement("SELECT n, f, s, b, ok, z FROM jd_items WHERE id = ?")) {
            ps.setLong(1, 1);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                row[0] = rs.getLong(1);
                row[1] = rs.getDouble(2);
                row[2] = rs.getString(3);
                row[3] = rs.getBytes(4);
                row[4] = rs.getBoolean(5);
                row[5] = rs.getString(6);
                if (!rs.wasNull()) row[5] = "not null: " + row[5];
            }
        } catch (Exception e) {
            readErr = e;
        }
        String[] features = {"read_integer", "read_float", "read_text", "read_bytea", "read_boolean", "read_null"};
        Object[] wants = {-42L, 2.5, "héllo", blob, true, null};
        for (int i = 0; i < 6; i++) {
            final int k = i;
            if (readErr != null) line(features[i], "fail", "select failed: " + oneLine(readErr));
            else check(features[i], () -> row[k], wants[i]);
        }

        // Result columns that are expressions (no declared column type).
        check("read_expression_types", () -> {
            try (PreparedStatement ps = db.prepareStatement("SELECT count(*), sum(f) FROM jd_items WHERE id = ?")) {
                ps.setLong(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return rs.getLong(1) + "/" + rs.getDouble(2) + "/" + rs.getObject(1).getClass().getSimpleName();
                }
            }
        }, "1/2.5/Long");

        // 100 executions each: pgjdbc moves to a named server-side statement
        // after prepareThreshold (5) uses of the same PreparedStatement.
        check("prepared_repeat", () -> {
            try (PreparedStatement ins = db.prepareStatement("INSERT INTO jd_items (id, n, s) VALUES (?, ?, ?)");
                 PreparedStatement sel = db.prepareStatement("SELECT n FROM jd_items WHERE id = ?")) {
                for (long i = 100; i < 200; i++) {
                    ins.setLong(1, i);
                    ins.setLong(2, i * 2);
                    ins.setString(3, "row " + i);
                    ins.executeUpdate();
                }
                long sum = 0;
                for (long i = 100; i < 200; i++) {
                    sel.setLong(1, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        rs.next();
                        sum += rs.getLong(1);
                    }
                }
                return sum;
            }
        }, 29900L);

        check("batch_insert", () -> {
            try (PreparedStatement ins = db.prepareStatement("INSERT INTO jd_items (id, n) VALUES (?, ?)")) {
                for (long i = 300; i < 310; i++) {
                    ins.setLong(1, i);
                    ins.setLong(2, i);
                    ins.addBatch();
                }
                return Arrays.stream(ins.executeBatch()).sum();
            }
        }, 10);

        sqlstate("error_23505_unique", () -> {
            try (PreparedStatement ps = db.prepareStatement("INSERT INTO jd_items (id) VALUES (?)")) {
                ps.setLong(1, 1);
                return ps.executeUpdate();
            }
        }, "23505", null);
        sqlstate("error_42601_syntax", () -> {
            try (Statement s = db.createStatement()) {
                return s.executeUpdate("INSERT INTO jd_items VALUE");
            }
        }, "42601", null);
        sqlstate("error_0A000_nondeterministic", () -> {
            try (Statement s = db.createStatement()) {
                return s.executeUpdate("INSERT INTO jd_items (id, n) VALUES (2, random())");
            }
        }, "0A000", null);
        sqlstate("follower_25006_leader_addr", () -> {
            try (Connection f = connect(follower, ""); Statement s = f.createStatement()) {
                return s.executeUpdate("INSERT INTO jd_items (id) VALUES (3)");
            }
        }, "25006", "not the leader; leader: " + LEADER_ADDR);

        // Transactions after setAutoCommit(false) (pgjdbc then sends BEGIN
        // with the first statement), each checked by what a new connection
        // sees afterwards.
        try (Statement s = db.createStatement()) {
            s.executeUpdate("CREATE TABLE jd_txn (id INTEGER PRIMARY KEY, s TEXT)");
        }
        check("txn_commit", () -> {
            try (Connection t = connect(leader, "")) {
                t.setAutoCommit(false);
                insert(t, 1, 2);
                String inside = count(t, 1, 9) + "/" + committedIds(leader, 1, 9);
                t.commit();
                return inside + " then " + committedIds(leader, 1, 9);
            }
        }, "2/[] then [1, 2]");
        // Ten inserts through one PreparedStatement: pgjdbc moves to a named
        // server-side statement inside the transaction.
        check("txn_rollback", () -> {
            try (Connection t = connect(leader, "")) {
                t.setAutoCommit(false);
                insert(t, 10, 19);
                t.rollback();
                insert(t, 20, 20);
                t.commit();
                return committedIds(leader, 10, 29);
            }
        }, "[20]");
        check("txn_error_25P02", () -> {
            try (Connection t = connect(leader, "")) {
                t.setAutoCommit(false);
                insert(t, 30, 30);
                String first = sqlstateOf(() -> insert(t, 30, 30));
                String then = sqlstateOf(() -> count(t, 30, 39));
                t.rollback();
                long after = count(t, 30, 39);
                t.rollback();
                return first + "/" + then + "/" + after + "/" + committedIds(leader, 30, 39);
            }
        }, "23505/25P02/0/[]");
        check("txn_savepoint", () -> {
            try (Connection t = connect(leader, "")) {
                t.setAutoCommit(false);
                insert(t, 50, 50);
                java.sql.Savepoint sp = t.setSavepoint();
                insert(t, 51, 51);
                t.rollback(sp);
                java.sql.Savepoint named = t.setSavepoint("kept");
                insert(t, 52, 52);
                t.releaseSavepoint(named);
                java.sql.Savepoint beforeError = t.setSavepoint();
                String dup = sqlstateOf(() -> insert(t, 50, 50));
                t.rollback(beforeError); // the error spares the outer transaction
                insert(t, 53, 53);
                t.commit();
                return dup + "/" + committedIds(leader, 50, 59);
            }
        }, "23505/[50, 52, 53]");

        // autosave=always: pgjdbc sets a savepoint before each statement and
        // rolls back to it on an error, so the transaction goes on.
        check("txn_autosave_always", () -> {
            try (Connection t = connect(leader, "?autosave=always")) {
                t.setAutoCommit(false);
                insert(t, 60, 60);
                String dup = sqlstateOf(() -> insert(t, 60, 60));
                insert(t, 61, 61);
                t.commit();
                return dup + "/" + committedIds(leader, 60, 69);
            }
        }, "23505/[60, 61]");

        try (ResultSet rs = db.getMetaData().getTables(null, null, "jd_items", null)) {
            line("catalog_queries", "pass", "DatabaseMetaData.getTables() works: update docs/compat.md");
        } catch (SQLException e) {
            line("catalog_queries", "unsupported", "DatabaseMetaData queries pg_catalog, not emulated yet: "
                + e.getSQLState() + " " + e.getMessage().split("\n")[0]);
        }

        db.close();
        System.exit(failed ? 1 : 0);
    }

    /** Inserts ids lo..hi into jd_txn through one PreparedStatement. */
    static int insert(Connection t, long lo, long hi) throws SQLException {
        try (PreparedStatement ps = t.prepareStatement("INSERT INTO jd_txn (id, s) VALUES (?, ?)")) {
            int n = 0;
            for (long i = lo; i <= hi; i++) {
                ps.setLong(1, i);
                ps.setString(2, "row " + i);
                n += ps.executeUpdate();
            }
            return n;
        }
    }

    static long count(Connection t, long lo, long hi) throws SQLException {
        try (PreparedStatement ps = t.prepareStatement("SELECT count(*) FROM jd_txn WHERE id BETWEEN ? AND ?")) {
            ps.setLong(1, lo);
            ps.setLong(2, hi);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    /** The ids in lo..hi a new (autocommit) connection sees: the committed ones. */
    static String committedIds(String hostPort, long lo, long hi) throws SQLException {
        try (Connection f = connect(hostPort, "");
             PreparedStatement ps = f.prepareStatement("SELECT id FROM jd_txn WHERE id BETWEEN ? AND ? ORDER BY id")) {
            ps.setLong(1, lo);
            ps.setLong(2, hi);
            java.util.List<Long> ids = new java.util.ArrayList<>();
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) ids.add(rs.getLong(1));
            }
            return ids.toString();
        }
    }

    /** The SQLSTATE body fails with, or "no error". */
    static String sqlstateOf(Body<?> body) {
        try {
            body.run();
            return "no error";
        } catch (SQLException e) {
            return e.getSQLState();
        } catch (Exception e) {
            return oneLine(e);
        }
    }
}
