//! How fast the durable Raft log is, next to how fast the disk under it can
//! fsync at all.
//!
//! Measures, in one run and in one directory on the disk under test:
//! - the raw rate of "append 128 bytes to a file, then fdatasync";
//! - `LogStore::append` + `LogStore::sync` with batches of 1, 8, 64 and 512
//!   entries of 100-byte payloads,
//!
//! and prints a markdown table. Each append+sync is one fdatasync, so the
//! ratio of the store's fsyncs/s to the raw rate says how close the store
//! comes to the disk's limit. Large batches also pay for the bytes they
//! write, so each row is also compared with a raw loop that writes as many
//! bytes per fdatasync as the store's frame (measured just before the row):
//! a ratio near 1.0 there means the store adds nothing the disk does not.
//!
//! ```text
//! cargo run --release -p resqlite-bench --bin log_store_bench -- [--secs 3] [--dir D] [--smoke]
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use resqlite_raft::{Entry, EntryKind, LogStore, LogStoreOptions};

const BATCH_SIZES: [usize; 4] = [1, 8, 64, 512];
const RAW_WRITE_BYTES: usize = 128;
/// Bytes of a frame around its entries, and around each entry's data
/// (see `raft/src/log_store/frame.rs`); only used to size the raw
/// comparison loop.
const FRAME_OVERHEAD: usize = 12 + 4;
const ENTRY_OVERHEAD: usize = 8 + 8 + 1 + 4;

#[derive(Parser, Debug)]
#[command(about = "Benchmark the Raft log store against the disk's raw fdatasync rate")]
struct Args {
    /// Directory on the disk to measure; a temporary directory is made (and
    /// removed) inside it. Default: the current directory, because /tmp may
    /// be a tmpfs where fsync costs nothing.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Run each measurement for about 0.2 s (for CI: checks that it runs,
    /// the numbers mean little).
    #[arg(long)]
    smoke: bool,
}

/// What one measurement loop saw.
struct Run {
    /// fdatasync calls (one per iteration).
    syncs: u64,
    /// Log entries written (equal to `syncs` for the raw loop).
    entries: u64,
    elapsed: Duration,
    /// Latency of each iteration (write + fdatasync).
    latencies: Vec<Duration>,
}

impl Run {
    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(i).copied().unwrap_or_default()
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Runs `step` (which returns how many entries it wrote) until `secs` have
/// passed, timing each call.
fn measure(secs: Duration, mut step: impl FnMut() -> Result<u64>) -> Result<Run> {
    let mut run = Run {
        syncs: 0,
        entries: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let start = Instant::now();
    while start.elapsed() < secs {
        let t = Instant::now();
        let entries = step()?;
        run.latencies.push(t.elapsed());
        run.syncs += 1;
        run.entries += entries;
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

fn raw_fdatasync(dir: &Path, write_bytes: usize, secs: Duration) -> Result<Run> {
    let path = dir.join("raw-fdatasync");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let buf = vec![0xA5u8; write_bytes];
    let run = measure(secs, || {
        file.write_all(&buf).context("write")?;
        file.sync_data().context("fdatasync")?;
        Ok(1)
    })?;
    fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(run)
}

fn log_store(dir: &Path, batch: usize, payload: usize, secs: Duration) -> Result<Run> {
    let path = dir.join(format!("store-{batch}"));
    let (mut store, recovered) = LogStore::open(&path, LogStoreOptions::default())
        .with_context(|| format!("open log store in {}", path.display()))?;
    anyhow::ensure!(
        recovered.entries.is_empty(),
        "{} is not empty",
        path.display()
    );
    let data = Bytes::from(vec![b'x'; payload]);
    let mut next = 1u64;
    let run = measure(secs, || {
        let entries: Vec<Entry> = (next..next + batch as u64)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: data.clone(),
            })
            .collect();
        store.append(&entries)?;
        store.sync()?;
        next += batch as u64;
        Ok(batch as u64)
    })?;
    drop(store);
    fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(run)
}

/// The file system type of the mount that holds `dir`, from
/// /proc/self/mounts (Linux); "unknown" elsewhere.
fn filesystem_of(dir: &Path) -> String {
    let Ok(dir) = dir.canonicalize() else {
        return "unknown".into();
    };
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(mount)
                .then(|| (mount.len(), format!("{fstype} ({device} on {mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let secs = Duration::from_secs_f64(if args.smoke { 0.2 } else { args.secs });
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let tmp = tempfile::Builder::new()
        .prefix("log-store-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("make a temporary directory in {}", parent.display()))?;
    let dir = tmp.path();
    let fs_type = filesystem_of(dir);
    if fs_type.starts_with("tmpfs") || fs_type.starts_with("ramfs") {
        eprintln!(
            "warning: {} is on {fs_type}: fsync costs nothing there, pass --dir on a real disk",
            dir.display()
        );
    }
    // Touch the directory so the first measurement does not pay for it.
    File::open(dir)?.sync_all()?;

    let raw = raw_fdatasync(dir, RAW_WRITE_BYTES, secs)?;
    let raw_rate = raw.per_sec(raw.syncs);
    let mut runs = Vec::new();
    for batch in BATCH_SIZES {
        let frame_bytes = FRAME_OVERHEAD + batch * (ENTRY_OVERHEAD + args.payload);
        let same_bytes = raw_fdatasync(dir, frame_bytes, secs)?;
        let store = log_store(dir, batch, args.payload, secs)?;
        runs.push((batch, frame_bytes, same_bytes, store));
    }

    println!(
        "cpus: {}, kernel: {}, file system: {fs_type}, {:.1} s per row, {} B payloads",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        secs.as_secs_f64(),
        args.payload,
    );
    println!();
    println!(
        "raw: {RAW_WRITE_BYTES} B write + fdatasync: {raw_rate:.0} syncs/s \
         (p50 {}, p99 {})",
        micros(raw.percentile(0.5)),
        micros(raw.percentile(0.99)),
    );
    println!();
    println!(
        "| batch (entries) | entries/s | fsyncs/s | fsyncs/s ÷ raw fdatasync/s \
         | frame bytes | raw fdatasync/s, same bytes | fsyncs/s ÷ that \
         | p50 append+sync | p99 append+sync |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (batch, frame_bytes, same_bytes, run) in &runs {
        let fsyncs = run.per_sec(run.syncs);
        let same_rate = same_bytes.per_sec(same_bytes.syncs);
        println!(
            "| {batch} | {:.0} | {fsyncs:.0} | {:.2} | {frame_bytes} | {same_rate:.0} | {:.2} | {} | {} |",
            run.per_sec(run.entries),
            fsyncs / raw_rate,
            fsyncs / same_rate,
            micros(run.percentile(0.5)),
            micros(run.percentile(0.99)),
        );
    }
    Ok(())
}
