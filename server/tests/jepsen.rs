//! Jepsen-style fault tests of real `resqlite serve` processes: every fault
//! schedule in turn (kills, pauses, partitions through proxies on every Raft
//! link, bridge, full-cluster kill, slow network) under concurrent register,
//! set, bank and counter clients (the last two in transactions), then
//! linearizability, lost/invented rows, bank totals, counter bounds and
//! convergence checks. See docs/testing.md, "Jepsen-style fault tests".
//!
//! CI mode (default): every schedule for `RESQLITE_JEPSEN_SECS` (default 40)
//! seconds, one after another in one test so the runs never compete for
//! the CPU. Soak mode: `RESQLITE_SOAK_SECS=N` splits N seconds among the
//! schedules. `RESQLITE_JEPSEN_SCHEDULES=a,b` picks schedules,
//! `RESQLITE_JEPSEN_KEEP=1` keeps every run's history and node logs, not
//! only a failing one's. `RESQLITE_JEPSEN_CLIENTS=registers=4,set=2,bank=2,counter=2`
//! sets the clients per workload. `RESQLITE_JEPSEN_BIN=path` runs another
//! `resqlite` binary than the one cargo built. `RESQLITE_SEED=S` fixes the seed (fault choice and client ops; timing on
//! a real cluster does not replay exactly).

use std::path::PathBuf;
use std::time::Duration;

use resqlite_tests::jepsen::harness::{median_max, parse_clients, run, RunConfig, CLIENTS};
use resqlite_tests::jepsen::nemesis::Schedule;

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedules_keep_histories_linearizable_and_lose_nothing() {
    let schedules: Vec<Schedule> = match std::env::var("RESQLITE_JEPSEN_SCHEDULES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                Schedule::from_name(n.trim()).unwrap_or_else(|| {
                    panic!("unknown schedule {n:?} in RESQLITE_JEPSEN_SCHEDULES")
                })
            })
            .collect(),
        Err(_) => Schedule::ALL.to_vec(),
    };
    let per_schedule = match env_u64("RESQLITE_SOAK_SECS") {
        Some(total) => Duration::from_secs((total / schedules.len() as u64).max(30)),
        None => Duration::from_secs(env_u64("RESQLITE_JEPSEN_SECS").unwrap_or(40)),
    };
    let seed = env_u64("RESQLITE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    // A run restarts nodes from this path again and again: point it at a
    // copy when something may rebuild the target directory meanwhile.
    let bin = std::env::var_os("RESQLITE_JEPSEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN));
    let clients = match std::env::var("RESQLITE_JEPSEN_CLIENTS") {
        Ok(spec) => parse_clients(&spec)
            .unwrap_or_else(|e| panic!("RESQLITE_JEPSEN_CLIENTS={spec:?}: {e:#}")),
        Err(_) => CLIENTS.to_vec(),
    };
    let out_dir = std::env::var("RESQLITE_JEPSEN_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jepsen"));
    eprintln!(
        "jepsen: seed={seed} schedules={} for {per_schedule:?} each (replay: RESQLITE_SEED={seed})",
        schedules.len()
    );

    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    let mut failovers = Vec::new();
    for (i, &schedule) in schedules.iter().enumerate() {
        let cfg = RunConfig {
            bin: bin.clone(),
            schedule,
            duration: per_schedule,
            seed: seed.wrapping_add(i as u64),
            out_dir: out_dir.clone(),
            keep_always: std::env::var_os("RESQLITE_JEPSEN_KEEP").is_some(),
            clients: clients.clone(),
        };
        match run(&cfg).await {
            Ok(report) => {
                eprintln!(
                    "{} (seed {}, {:?})",
                    report.summary(),
                    report.seed,
                    report.elapsed
                );
                summaries.push(report.summary());
                for w in &report.workloads {
                    let line = w.line(schedule);
                    eprintln!("  {line}");
                    summaries.push(format!("  {line}"));
                }
                failovers.extend(report.failovers.iter().copied());
                if let Some((med, max)) = median_max(&report.failovers) {
                    eprintln!(
                        "schedule={} failover_median={med:?} failover_max={max:?} kills={}",
                        schedule.name(),
                        report.failovers.len()
                    );
                }
                for a in &report.anomalies {
                    eprintln!("  ANOMALY: {a}");
                }
                if let Some(p) = &report.history_path {
                    eprintln!("  history kept at {}", p.display());
                }
                if let (Some(p), false) = (&report.history_path, report.anomalies.is_empty()) {
                    failures.push(format!(
                        "{} (history: {}, replay: RESQLITE_SEED={} RESQLITE_JEPSEN_SCHEDULES={})",
                        report.summary(),
                        p.display(),
                        seed,
                        schedule.name()
                    ));
                }
            }
            Err(e) => {
                eprintln!("schedule={} could not run: {e:#}", schedule.name());
                failures.push(format!("schedule={} could not run: {e:#}", schedule.name()));
            }
        }
    }
    // The summary goes straight to the process's stderr, past the test
    // harness's capture, so every CI log shows it, pass or fail.
    let mut summary = format!("--- jepsen summary (seed {seed}) ---\n");
    for s in &summaries {
        summary.push_str(&format!("{s}\n"));
    }
    if let Some((med, max)) = median_max(&failovers) {
        summary.push_str(&format!(
            "leader kill -9 -> first acknowledged write: median={med:?} max={max:?} over {} kills\n",
            failovers.len()
        ));
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), summary.as_bytes());
    assert!(
        failures.is_empty(),
        "anomalies found:\n{}",
        failures.join("\n")
    );
}
