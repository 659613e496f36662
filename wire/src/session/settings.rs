//! One connection's settings: what `SET` and `RESET` change and `SHOW`
//! reads, and the session the executor sees.

use std::collections::BTreeMap;
use std::time::Duration;

use super::timeout::parse_timeout;
use super::Command;
use crate::errors::internal;
use crate::executor::{NodeRole, Outcome, Session, SqlError, Value};

/// The setting behind [`Session::weak_reads`].
const READ_CONSISTENCY: &str = "resqlite.read_consistency";

/// The setting behind [`Settings::statement_timeout`].
const STATEMENT_TIMEOUT: &str = "statement_timeout";

/// The setting behind [`Session::lock_timeout`].
const LOCK_TIMEOUT: &str = "lock_timeout";

/// The setting behind [`Settings::idle_in_transaction_timeout`].
const IDLE_TIMEOUT: &str = "idle_in_transaction_session_timeout";

/// ReSQLite's default for [`IDLE_TIMEOUT`] (PostgreSQL's is 0, none): a
/// write transaction holds the cluster's only write lock, so a client
/// that opens one and goes quiet would stop every writer on every node.
/// A minute is longer than any pause a working client makes inside a
/// transaction.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The setting behind [`Settings::default_read_only`].
const DEFAULT_READ_ONLY: &str = "default_transaction_read_only";

/// What one session command produced.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Rows and tag, as a statement's.
    pub(crate) outcome: Outcome,
    /// Settings clients track that changed, for ParameterStatus.
    pub(crate) reports: Vec<(String, String)>,
}

/// Settings PostgreSQL reports with ParameterStatus when they change.
const REPORTED: [&str; 4] = ["application_name", "DateStyle", "TimeZone", "IntervalStyle"];

/// One connection's settings.
#[derive(Debug)]
pub(crate) struct Settings {
    server_version: String,
    /// Lower-case name → value, for settings the client changed.
    values: BTreeMap<String, String>,
    weak_reads: bool,
    /// The role the session logged in as.
    user: std::sync::Arc<str>,
    /// Whether that role is a superuser.
    superuser: bool,
    statement_timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
    idle_in_transaction_timeout: Option<Duration>,
    /// `default_transaction_read_only` as the client set it.
    default_read_only: bool,
}

impl Settings {
    /// Settings for a new connection, seeded from its startup parameters
    /// (`application_name`, and any setting passed as `options` would be).
    pub(crate) fn new<'a>(
        server_version: &str,
        startup: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Settings {
        let mut settings = Settings {
            server_version: server_version.to_string(),
            values: BTreeMap::new(),
            weak_reads: false,
            user: std::sync::Arc::from(""),
            superuser: false,
            statement_timeout: None,
            lock_timeout: None,
            idle_in_transaction_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            default_read_only: false,
        };
        for (name, value) in startup {
            if name == "user" {
                settings.user = std::sync::Arc::from(value.as_str());
            }
            if matches!(
                name.as_str(),
                "user" | "database" | "options" | "replication" | "client_encoding"
            ) {
                continue;
            }
            if let Err(e) = settings.set(name, Some(value.clone())) {
                tracing::warn!(setting = %name, error = %e.message, "startup parameter ignored");
            }
        }
        settings
    }

    /// Records whether the role that logged in is a superuser.
    pub(crate) fn set_superuser(&mut self, superuser: bool) {
        self.superuser = superuser;
    }

    /// The session the executor sees.
    pub(crate) fn session(&self) -> Session {
        Session {
            weak_reads: self.weak_reads,
            user: self.user.clone(),
            superuser: self.superuser,
            lock_timeout: self.lock_timeout,
        }
    }

    /// How long a client may stay silent inside a transaction block
    /// before its connection is closed; `None`: forever.
    pub(crate) fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        self.idle_in_transaction_timeout
    }

    /// Whether blocks begin read-only unless they say otherwise
    /// (`default_transaction_read_only`, `SET SESSION CHARACTERISTICS`).
    pub(crate) fn default_read_only(&self) -> bool {
        self.default_read_only
    }

    /// `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY|WRITE`.
    pub(crate) fn set_default_read_only(&mut self, read_only: bool) {
        let value = if read_only { "on" } else { "off" };
        self.default_read_only = read_only;
        self.values
            .insert(DEFAULT_READ_ONLY.to_string(), value.to_string());
    }

    /// How long a statement may run (`SET statement_timeout`); `None`:
    /// as long as it takes.
    pub(crate) fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// Runs one session command. `role` is the node's role now: it answers
    /// `SHOW transaction_read_only` and its kin, with `block_read_only`,
    /// whether the transaction block the connection is in (if any) is
    /// read-only.
    pub(crate) fn run(
        &mut self,
        command: &Command,
        role: &NodeRole,
        block_read_only: Option<bool>,
    ) -> Result<Reply, SqlError> {
        let read_only = ReadOnly {
            node: !role.is_leader,
            block: block_read_only,
        };
        let mut reports = Vec::new();
        let outcome = match command {
            Command::Set { name, value } => {
                self.set(name, value.clone())?;
                reports.extend(self.report(name));
                execution("SET")
            }
            Command::SetIgnored => execution("SET"),
            Command::Reset { name: Some(name) } => {
                self.set(name, None)?;
                reports.extend(self.report(name));
                execution("RESET")
            }
            Command::Reset { name: None } => {
                let names: Vec<String> = self.values.keys().cloned().collect();
                self.values.clear();
                self.weak_reads = false;
                self.statement_timeout = None;
                self.lock_timeout = None;
                self.idle_in_transaction_timeout = Some(DEFAULT_IDLE_TIMEOUT);
                self.default_read_only = false;
                reports.extend(names.iter().filter_map(|n| self.report(n)));
                execution("RESET")
            }
            Command::Show { name: Some(name) } => {
                let value = self.show(name, read_only).ok_or_else(|| {
                    SqlError::new(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                Outcome {
                    tag: "SHOW".into(),
                    columns: command.columns(),
                    rows: vec![vec![Value::Text(value)]],
                }
            }
            Command::Transaction(_) | Command::Deallocate { .. } | Command::Discard { .. } => {
                return Err(internal(
                    "a transaction statement reached the session settings; the connection \
                     carries those out",
                ))
            }
            Command::Show { name: None } => {
                let mut names: Vec<&str> = DEFAULTS.iter().map(|(n, _, _)| *n).collect();
                names.extend(self.values.keys().map(String::as_str));
                names.sort_by_key(|n| n.to_ascii_lowercase());
                names.dedup_by_key(|n| n.to_ascii_lowercase());
                let rows = names
                    .iter()
                    .map(|n| {
                        let value = self.show(n, read_only).unwrap_or_default();
                        let description = DEFAULTS
                            .iter()
                            .find(|(d, _, _)| d.eq_ignore_ascii_case(n))
                            .map_or("", |(_, _, d)| *d);
                        vec![
                            Value::Text(n.to_string()),
                            Value::Text(value),
                            Value::Text(description.to_string()),
                        ]
                    })
                    .collect();
                Outcome {
                    tag: "SHOW".into(),
                    columns: command.columns(),
                    rows,
                }
            }
        };
        Ok(Reply { outcome, reports })
    }

    /// Sets (`Some`) or resets (`None`) one setting, checking the ones that
    /// mean something here.
    fn set(&mut self, name: &str, value: Option<String>) -> Result<(), SqlError> {
        let key = name.to_ascii_lowercase();
        match (key.as_str(), value.as_deref()) {
            (READ_CONSISTENCY, None) => self.weak_reads = false,
            (READ_CONSISTENCY, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "weak" => self.weak_reads = true,
                "linearizable" => self.weak_reads = false,
                _ => {
                    let mut e = SqlError::new(
                        "22023",
                        format!("invalid value for parameter \"{READ_CONSISTENCY}\": \"{v}\""),
                    );
                    e.detail = Some("Available values: weak, linearizable.".into());
                    return Err(e);
                }
            },
            (STATEMENT_TIMEOUT, None) => self.statement_timeout = None,
            (STATEMENT_TIMEOUT, Some(v)) => {
                self.statement_timeout = parse_timeout(STATEMENT_TIMEOUT, v)?
            }
            (LOCK_TIMEOUT, None) => self.lock_timeout = None,
            (LOCK_TIMEOUT, Some(v)) => self.lock_timeout = parse_timeout(LOCK_TIMEOUT, v)?,
            (IDLE_TIMEOUT, None) => self.idle_in_transaction_timeout = Some(DEFAULT_IDLE_TIMEOUT),
            (IDLE_TIMEOUT, Some(v)) => {
                self.idle_in_transaction_timeout = parse_timeout(IDLE_TIMEOUT, v)?
            }
            (DEFAULT_READ_ONLY, None) => self.default_read_only = false,
            (DEFAULT_READ_ONLY, Some(v)) => {
                self.default_read_only = parse_bool(DEFAULT_READ_ONLY, v)?
            }
            ("client_encoding", Some(v))
                if !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "utf8" | "utf-8" | "unicode"
                ) =>
            {
                return Err(SqlError::new(
                    "0A000",
                    format!("client_encoding \"{v}\" is not supported: only UTF8 is"),
                ));
            }
            _ => {}
        }
        match value {
            Some(v) => self.values.insert(key, v),
            None => self.values.remove(&key),
        };
        Ok(())
    }

    /// The ParameterStatus to send after `name` changed, if clients track it.
    fn report(&self, name: &str) -> Option<(String, String)> {
        let canonical = REPORTED.iter().find(|r| r.eq_ignore_ascii_case(name))?;
        let value = self
            .values
            .get(&name.to_ascii_lowercase())
            .cloned()
            .or_else(|| default_value(canonical).map(str::to_string))
            .unwrap_or_default();
        Some((canonical.to_string(), value))
    }

    /// The current value of `name`; None when it is unknown.
    fn show(&self, name: &str, read_only: ReadOnly) -> Option<String> {
        let key = name.to_ascii_lowercase();
        let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
        match key.as_str() {
            // A follower refuses writes, whatever the session chose.
            "in_hot_standby" => return Some(on_off(read_only.node)),
            DEFAULT_READ_ONLY => return Some(on_off(read_only.node || self.default_read_only)),
            "transaction_read_only" => {
                let session = read_only.block.unwrap_or(self.default_read_only);
                return Some(on_off(read_only.node || session));
            }
            // Every transaction is serializable, whatever was asked for.
            "transaction_isolation" | "default_transaction_isolation" => {
                return Some("serializable".to_string())
            }
            "server_version" => return Some(self.server_version.clone()),
            "server_version_num" => return Some(version_num(&self.server_version)),
            "server_encoding" | "client_encoding" => return Some("UTF8".to_string()),
            "is_superuser" => return Some(if self.superuser { "on" } else { "off" }.to_string()),
            "session_authorization" => return Some(self.user.to_string()),
            READ_CONSISTENCY => {
                return Some(
                    if self.weak_reads {
                        "weak"
                    } else {
                        "linearizable"
                    }
                    .to_string(),
                )
            }
            _ => {}
        }
        self.values
            .get(&key)
            .cloned()
            .or_else(|| default_value(&key).map(str::to_string))
    }
}

/// Settings every connection has: name, default, description. Values
/// computed from the node (read-only state, version) are listed with an
/// empty default and answered by [`Settings::show`].
const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "application_name",
        "",
        "Sets the application name to be reported.",
    ),
    (
        "client_encoding",
        "",
        "The client's character set (always UTF8).",
    ),
    (
        "DateStyle",
        "ISO, MDY",
        "Sets the display format for date and time values.",
    ),
    (
        "default_transaction_isolation",
        "serializable",
        "Every transaction is serializable.",
    ),
    (
        DEFAULT_READ_ONLY,
        "",
        "Whether transaction blocks begin read-only (always on when this node is not the leader).",
    ),
    (
        "extra_float_digits",
        "1",
        "Sets the number of digits displayed for floats.",
    ),
    (
        IDLE_TIMEOUT,
        "1min",
        "Closes a connection silent inside a transaction block for longer (0: never); \
         an open write transaction holds the cluster's write lock.",
    ),
    ("in_hot_standby", "", "on when this node is not the leader."),
    ("integer_datetimes", "on", "Datetimes are integer based."),
    (
        "is_superuser",
        "",
        "Whether the session's role is a superuser.",
    ),
    (
        "IntervalStyle",
        "postgres",
        "Sets the display format for interval values.",
    ),
    (
        READ_CONSISTENCY,
        "",
        "linearizable (reads confirm leadership) or weak (reads are served locally).",
    ),
    (
        LOCK_TIMEOUT,
        "0",
        "How long a statement waits for the write lock another transaction holds (0: as long as it takes).",
    ),
    ("search_path", "public", "Sets the schema search order."),
    (
        STATEMENT_TIMEOUT,
        "0",
        "Sets the maximum allowed duration of any statement (0: none).",
    ),
    (
        "server_encoding",
        "",
        "The server's character set (always UTF8).",
    ),
    (
        "server_version",
        "",
        "The PostgreSQL version this server speaks as.",
    ),
    (
        "server_version_num",
        "",
        "The server version as an integer.",
    ),
    (
        "session_authorization",
        "",
        "The role the session logged in as.",
    ),
    (
        "standard_conforming_strings",
        "on",
        "'...' strings treat backslashes literally.",
    ),
    (
        "TimeZone",
        "UTC",
        "Sets the time zone for displaying time stamps.",
    ),
    (
        "transaction_isolation",
        "serializable",
        "SQLite transactions are serializable.",
    ),
    (
        "transaction_read_only",
        "",
        "Whether the current transaction is read-only (always on when this node is not the leader).",
    ),
];

/// What makes transactions read-only now, for `SHOW`.
#[derive(Clone, Copy, Debug)]
struct ReadOnly {
    /// This node is not the leader.
    node: bool,
    /// The connection is in a block: whether it is read-only.
    block: Option<bool>,
}

/// A boolean setting's value, as PostgreSQL reads it.
fn parse_bool(name: &str, value: &str) -> Result<bool, SqlError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok(false),
        _ => Err(SqlError::new(
            "22023",
            format!("parameter \"{name}\" requires a Boolean value (on or off), not \"{value}\""),
        )),
    }
}

fn default_value(name: &str) -> Option<&'static str> {
    DEFAULTS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v, _)| *v)
}

/// The column name SHOW uses: the setting's canonical spelling.
pub(crate) fn display_name(name: &str) -> &str {
    DEFAULTS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map_or(name, |(n, _, _)| n)
}

/// `server_version_num` for a `server_version` like `16.2`: 160002.
fn version_num(version: &str) -> String {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major * 10_000 + minor).to_string()
}

fn execution(tag: &str) -> Outcome {
    Outcome {
        tag: tag.to_string(),
        columns: Vec::new(),
        rows: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::parse;

    fn parsed(sql: &str) -> Command {
        parse(sql).expect("a session command").expect("well formed")
    }

    const LEADER: NodeRole = NodeRole { is_leader: true };
    const FOLLOWER: NodeRole = NodeRole { is_leader: false };

    #[test]
    fn read_consistency_drives_weak_reads() {
        let mut s = Settings::new("16.0", []);
        assert!(!s.session().weak_reads);
        s.run(
            &parsed("SET resqlite.read_consistency = 'WEAK'"),
            &LEADER,
            None,
        )
        .unwrap();
        assert!(s.session().weak_reads);
        let shown = s
            .run(&parsed("SHOW resqlite.read_consistency"), &LEADER, None)
            .unwrap();
        assert_eq!(shown.outcome.rows, vec![vec![Value::Text("weak".into())]]);
        s.run(
            &parsed("SET resqlite.read_consistency TO linearizable"),
            &LEADER,
            None,
        )
        .unwrap();
        assert!(!s.session().weak_reads);
        s.run(
            &parsed("SET resqlite.read_consistency = weak"),
            &LEADER,
            None,
        )
        .unwrap();
        s.run(&parsed("RESET ALL"), &LEADER, None).unwrap();
        assert!(!s.session().weak_reads);
        let err = s
            .run(
                &parsed("SET resqlite.read_consistency = 'eventual'"),
                &LEADER,
                None,
            )
            .unwrap_err();
        assert_eq!(err.sqlstate, "22023");
        assert!(!s.session().weak_reads);
    }

    #[test]
    fn show_answers_read_only_from_the_role() {
        let mut s = Settings::new("16.0", []);
        let show = |s: &mut Settings, role| {
            let r = s
                .run(&parsed("SHOW transaction_read_only"), role, None)
                .unwrap();
            assert_eq!(r.outcome.tag, "SHOW");
            assert_eq!(r.outcome.columns[0].name, "transaction_read_only");
            r.outcome.rows[0][0].clone()
        };
        assert_eq!(show(&mut s, &LEADER), Value::Text("off".into()));
        assert_eq!(show(&mut s, &FOLLOWER), Value::Text("on".into()));
    }

    #[test]
    fn set_values_are_remembered_and_reset() {
        let app = String::from("application_name");
        let psql = String::from("psql");
        let mut s = Settings::new("16.2", [(&app, &psql)]);
        let show = |s: &mut Settings, sql: &str| {
            s.run(&parsed(sql), &LEADER, None)
                .map(|r| r.outcome.rows[0][0].clone())
        };
        assert_eq!(
            show(&mut s, "SHOW application_name").unwrap(),
            Value::Text("psql".into())
        );
        assert_eq!(
            show(&mut s, "SHOW server_version_num").unwrap(),
            Value::Text("160002".into())
        );
        assert_eq!(
            show(&mut s, "SHOW datestyle").unwrap(),
            Value::Text("ISO, MDY".into())
        );
        let reply = s
            .run(&parsed("SET application_name = 'etl'"), &LEADER, None)
            .unwrap();
        assert_eq!(
            reply.reports,
            vec![("application_name".to_string(), "etl".to_string())]
        );
        s.run(&parsed("SET my.custom = 42"), &LEADER, None).unwrap();
        assert_eq!(
            show(&mut s, "SHOW my.custom").unwrap(),
            Value::Text("42".into())
        );
        s.run(&parsed("RESET my.custom"), &LEADER, None).unwrap();
        assert_eq!(
            show(&mut s, "SHOW my.custom").unwrap_err().sqlstate,
            "42704"
        );
        assert_eq!(show(&mut s, "SHOW nonsense").unwrap_err().sqlstate, "42704");
    }

    #[test]
    fn statement_timeout_is_parsed_shown_and_reset() {
        let mut s = Settings::new("16.0", []);
        assert_eq!(s.statement_timeout(), None);
        s.run(&parsed("SET statement_timeout = '1s'"), &LEADER, None)
            .unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(1)));
        let shown = s
            .run(&parsed("SHOW statement_timeout"), &LEADER, None)
            .unwrap();
        assert_eq!(shown.outcome.rows, vec![vec![Value::Text("1s".into())]]);
        s.run(&parsed("SET statement_timeout TO 250"), &LEADER, None)
            .unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_millis(250)));
        let err = s
            .run(&parsed("SET statement_timeout = 'soon'"), &LEADER, None)
            .unwrap_err();
        assert_eq!(err.sqlstate, "22023");
        assert_eq!(s.statement_timeout(), Some(Duration::from_millis(250)));
        s.run(&parsed("SET statement_timeout = 0"), &LEADER, None)
            .unwrap();
        assert_eq!(s.statement_timeout(), None);
        s.run(&parsed("SET statement_timeout = '5min'"), &LEADER, None)
            .unwrap();
        s.run(&parsed("RESET ALL"), &LEADER, None).unwrap();
        assert_eq!(s.statement_timeout(), None);
        let shown = s
            .run(&parsed("SHOW statement_timeout"), &LEADER, None)
            .unwrap();
        assert_eq!(shown.outcome.rows, vec![vec![Value::Text("0".into())]]);
        let from_startup = (String::from("statement_timeout"), String::from("2s"));
        let s = Settings::new("16.0", [(&from_startup.0, &from_startup.1)]);
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn only_utf8_client_encoding() {
        let mut s = Settings::new("16.0", []);
        s.run(&parsed("SET client_encoding = 'UTF8'"), &LEADER, None)
            .unwrap();
        s.run(&parsed("SET NAMES 'unicode'"), &LEADER, None)
            .unwrap();
        let err = s
            .run(&parsed("SET client_encoding = 'LATIN1'"), &LEADER, None)
            .unwrap_err();
        assert_eq!(err.sqlstate, "0A000");
    }

    #[test]
    fn show_all_lists_settings() {
        let mut s = Settings::new("16.0", []);
        let reply = s.run(&parsed("SHOW ALL"), &FOLLOWER, None).unwrap();
        assert_eq!(reply.outcome.columns.len(), 3);
        let ro = reply
            .outcome
            .rows
            .iter()
            .find(|r| r[0] == Value::Text("transaction_read_only".into()))
            .expect("listed");
        assert_eq!(ro[1], Value::Text("on".into()));
    }

    #[test]
    fn lock_and_idle_timeouts_are_parsed_shown_and_reset() {
        let mut s = Settings::new("16.0", []);
        assert_eq!(s.session().lock_timeout, None);
        assert_eq!(
            s.idle_in_transaction_timeout(),
            Some(Duration::from_secs(60))
        );
        s.run(&parsed("SET lock_timeout = '5s'"), &LEADER, None)
            .unwrap();
        assert_eq!(s.session().lock_timeout, Some(Duration::from_secs(5)));
        s.run(&parsed("SET lock_timeout TO 250"), &LEADER, None)
            .unwrap();
        assert_eq!(s.session().lock_timeout, Some(Duration::from_millis(250)));
        let shown = s.run(&parsed("SHOW lock_timeout"), &LEADER, None).unwrap();
        assert_eq!(shown.outcome.rows, vec![vec![Value::Text("250".into())]]);
        let err = s
            .run(&parsed("SET lock_timeout = 'a while'"), &LEADER, None)
            .unwrap_err();
        assert_eq!(err.sqlstate, "22023");
        s.run(&parsed("SET lock_timeout = 0"), &LEADER, None)
            .unwrap();
        assert_eq!(s.session().lock_timeout, None);

        let shown = s
            .run(
                &parsed("SHOW idle_in_transaction_session_timeout"),
                &LEADER,
                None,
            )
            .unwrap();
        assert_eq!(shown.outcome.rows, vec![vec![Value::Text("1min".into())]]);
        s.run(
            &parsed("SET idle_in_transaction_session_timeout = '1min'"),
            &LEADER,
            None,
        )
        .unwrap();
        s.run(
            &parsed("SET idle_in_transaction_session_timeout = 0"),
            &LEADER,
            None,
        )
        .unwrap();
        assert_eq!(s.idle_in_transaction_timeout(), None);
        s.run(&parsed("SET lock_timeout = '1min'"), &LEADER, None)
            .unwrap();
        s.run(&parsed("RESET ALL"), &LEADER, None).unwrap();
        assert_eq!(s.session().lock_timeout, None);
        assert_eq!(
            s.idle_in_transaction_timeout(),
            Some(Duration::from_secs(60))
        );
        let all = s.run(&parsed("SHOW ALL"), &LEADER, None).unwrap();
        for name in [LOCK_TIMEOUT, IDLE_TIMEOUT, "default_transaction_isolation"] {
            assert!(
                all.outcome
                    .rows
                    .iter()
                    .any(|r| r[0] == Value::Text(name.into())),
                "{name} in SHOW ALL"
            );
        }
    }

    #[test]
    fn read_only_defaults_and_blocks_show_in_transaction_read_only() {
        let mut s = Settings::new("16.0", []);
        let show = |s: &mut Settings, name: &str, block| {
            let r = s
                .run(&parsed(&format!("SHOW {name}")), &LEADER, block)
                .unwrap();
            r.outcome.rows[0][0].clone()
        };
        let on = Value::Text("on".into());
        let off = Value::Text("off".into());
        assert_eq!(show(&mut s, "transaction_read_only", None), off);
        assert_eq!(show(&mut s, "transaction_read_only", Some(true)), on);
        assert!(!s.default_read_only());
        s.run(
            &parsed("SET default_transaction_read_only = on"),
            &LEADER,
            None,
        )
        .unwrap();
        assert!(s.default_read_only());
        assert_eq!(show(&mut s, "default_transaction_read_only", None), on);
        assert_eq!(show(&mut s, "transaction_read_only", None), on);
        assert_eq!(show(&mut s, "transaction_read_only", Some(false)), off);
        let err = s
            .run(
                &parsed("SET default_transaction_read_only = maybe"),
                &LEADER,
                None,
            )
            .unwrap_err();
        assert_eq!(err.sqlstate, "22023");
        s.set_default_read_only(false);
        assert_eq!(show(&mut s, "default_transaction_read_only", None), off);
        assert_eq!(
            show(&mut s, "transaction_isolation", None),
            Value::Text("serializable".into())
        );
        assert_eq!(
            show(&mut s, "default_transaction_isolation", None),
            Value::Text("serializable".into())
        );
    }
}
