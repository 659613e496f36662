//! Runs the `resqlite` command line the way an operator would.

use std::path::Path;
use std::process::Command;

/// Runs `bin` (the `resqlite` binary) with `args`; returns whether it
/// succeeded and everything it printed (stdout, then stderr).
pub fn run(bin: impl AsRef<Path>, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin.as_ref())
        .args(args)
        .output()
        .expect("run resqlite");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
