//! The deterministic Raft simulator (see `sim/mod.rs` and
//! `docs/testing.md`).
//!
//! - `cargo test -p resqlite-raft --test simulator` runs the default seeds
//!   for 3 and for 5 nodes, and for clusters whose membership changes
//!   (`membership`: starting from 3 voters).
//! - `RESQLITE_SIM_SEEDS=N` runs N seeds per cluster size;
//!   `RESQLITE_SIM_SEED_START=S` starts at seed S (to explore new seeds);
//!   `RESQLITE_SIM_STEPS=K` runs K chaos events per seed;
//!   `RESQLITE_SIM_KEEP_GOING=1` runs every seed and reports each failing
//!   one (to measure how quickly an injected bug is found).
//! - `RESQLITE_SEED=S cargo test -p resqlite-raft --test simulator <test>`
//!   replays seed S exactly; add `RESQLITE_SIM_TRACE=1` and `--nocapture`
//!   to print every event.

mod sim;

use std::time::Instant;

use sim::{Options, Stats};

/// Seeds per cluster size when `RESQLITE_SIM_SEEDS` is not set.
const DEFAULT_SEEDS: u64 = 1500;
/// Seeds of the membership scenario when `RESQLITE_SIM_SEEDS` is not set
/// (fewer: each runs up to 13 nodes).
const DEFAULT_MEMBERSHIP_SEEDS: u64 = 700;
/// Chaos events per seed when `RESQLITE_SIM_STEPS` is not set.
const DEFAULT_STEPS: u64 = 4000;
/// Trace lines shown with a failure.
const TRACE_TAIL: usize = 80;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("{name} must be a non-negative integer, not {value:?}"),
    }
}

/// Runs the configured seeds on a cluster of `nodes` (whose membership an
/// operator changes if `membership`); panics with a replay command on the
/// first failure.
fn run_seeds(nodes: usize, membership: bool, test: &str) -> (u64, Stats) {
    let steps = env_u64("RESQLITE_SIM_STEPS").unwrap_or(DEFAULT_STEPS);
    let echo = std::env::var_os("RESQLITE_SIM_TRACE").is_some();
    let seeds: Vec<u64> = match env_u64("RESQLITE_SEED") {
        Some(seed) => vec![seed],
        None => {
            let start = env_u64("RESQLITE_SIM_SEED_START").unwrap_or(0);
            let default = if membership {
                DEFAULT_MEMBERSHIP_SEEDS
            } else {
                DEFAULT_SEEDS
            };
            let count = env_u64("RESQLITE_SIM_SEEDS").unwrap_or(default);
            (start..start + count).collect()
        }
    };
    let keep_going = std::env::var_os("RESQLITE_SIM_KEEP_GOING").is_some();
    let began = Instant::now();
    let mut total = Stats::default();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let opts = Options {
            seed,
            nodes,
            membership,
            steps,
            trace_tail: 0,
            echo,
        };
        match sim::run(&opts) {
            Ok(stats) => {
                total.steps += stats.steps;
                total.leaders += stats.leaders;
                total.committed += stats.committed;
                total.crashes += stats.crashes;
                total.reads_confirmed += stats.reads_confirmed;
                total.messages += stats.messages;
                total.compactions += stats.compactions;
                total.snapshots_installed += stats.snapshots_installed;
                total.recovery_time = total.recovery_time.max(stats.recovery_time);
                total.changes_proposed += stats.changes_proposed;
                total.changes_committed += stats.changes_committed;
                total.joins += stats.joins;
                total.leader_removals += stats.leader_removals;
            }
            Err(first) if keep_going => {
                eprintln!(
                    "{test}: seed {seed} fails at step {}: {}",
                    first.step, first.violation
                );
                failed.push(seed);
            }
            Err(first) => {
                // Runs are deterministic: replay with the trace on for the report.
                let report = match sim::run(&Options {
                    trace_tail: TRACE_TAIL,
                    echo: false,
                    ..opts
                }) {
                    Err(again) if again.step == first.step => again.to_string(),
                    other => format!(
                        "{first}\nNOT DETERMINISTIC: the traced replay ended differently: {other:?}"
                    ),
                };
                panic!(
                    "{report}\nreplay: RESQLITE_SEED={seed} cargo test -p resqlite-raft --test simulator {test}"
                );
            }
        }
    }
    eprintln!(
        "{test}: {} seeds, {} steps, {} leaders elected, {} entries committed, {} crashes, \
         {} reads confirmed, {} messages, {} compactions, {} snapshots installed, \
         {} membership changes proposed ({} of the leader), {} committed, {} nodes joined, \
         slowest recovery {} time units, in {:.1?}",
        seeds.len(),
        total.steps,
        total.leaders,
        total.committed,
        total.crashes,
        total.reads_confirmed,
        total.messages,
        total.compactions,
        total.snapshots_installed,
        total.changes_proposed,
        total.leader_removals,
        total.changes_committed,
        total.joins,
        total.recovery_time,
        began.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{test}: {} of {} seeds failed: {failed:?}",
        failed.len(),
        seeds.len()
    );
    (seeds.len() as u64, total)
}

/// A simulator that never elects, commits, crashes or reads cannot find
/// bugs: require that the seeds, together, exercised all of it.
fn assert_exercised(seeds: u64, total: &Stats) {
    if seeds < 20 {
        return;
    }
    assert!(total.leaders >= 3 * seeds, "too few elections: {total:?}");
    assert!(total.committed >= 20 * seeds, "too few commits: {total:?}");
    assert!(total.crashes >= 2 * seeds, "too few crashes: {total:?}");
    assert!(
        total.reads_confirmed >= 5 * seeds,
        "too few confirmed reads: {total:?}"
    );
    assert!(
        total.snapshots_installed >= seeds / 2,
        "too few snapshots installed: {total:?}"
    );
}

#[test]
fn three_nodes() {
    let (seeds, total) = run_seeds(3, false, "three_nodes");
    assert_exercised(seeds, &total);
}

#[test]
fn five_nodes() {
    let (seeds, total) = run_seeds(5, false, "five_nodes");
    assert_exercised(seeds, &total);
}

/// Three voters to start with; an operator adds, promotes and removes
/// members (the leader too) under the same faults.
#[test]
fn membership() {
    let (seeds, total) = run_seeds(3, true, "membership");
    assert_exercised(seeds, &total);
    if seeds >= 20 {
        assert!(
            total.changes_committed >= 2 * seeds,
            "too few membership changes committed: {total:?}"
        );
        assert!(total.joins >= seeds, "too few nodes joined: {total:?}");
        assert!(
            total.leader_removals >= seeds / 4,
            "too few removals of the leader: {total:?}"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for (seed, membership) in [(7, false), (8, false), (7, true)] {
        let opts = Options {
            seed,
            nodes: 3,
            membership,
            steps: 1000,
            trace_tail: 0,
            echo: false,
        };
        let first = sim::run(&opts)
            .map_err(|f| f.to_string())
            .expect("seed passes");
        let again = sim::run(&opts)
            .map_err(|f| f.to_string())
            .expect("seed passes");
        assert_eq!(first, again, "seed {seed} ran differently twice");
    }
    let a = sim::run(&Options {
        seed: 7,
        nodes: 3,
        membership: false,
        steps: 1000,
        trace_tail: 0,
        echo: false,
    });
    let b = sim::run(&Options {
        seed: 8,
        nodes: 3,
        membership: false,
        steps: 1000,
        trace_tail: 0,
        echo: false,
    });
    assert_ne!(
        a.map(|s| s.digest).ok(),
        b.map(|s| s.digest).ok(),
        "seeds must matter"
    );
}
