#!/usr/bin/env python3
"""Splits a `perf record --call-graph dwarf` profile of one resqlite node
into the parts of the system its samples were spent in.

    perf script -i perf.data | python3 bench/perf_categories.py

Each sample goes to the first category (in the order below) one of whose
patterns occurs in a frame of its stack, so a frame of SQLite under the
apply thread counts as "apply", and kernel time (syscalls, context
switches) counts where it was called from. Prints the share of samples per
category, then the top self frames within each.
"""
import collections
import sys

CATEGORIES = [
    ("SQL classification (sqlparser)", ["sqlparser::", "classif"]),
    ("result-type inference", ["result_types::infer"]),
    ("reads on reader threads (SQLite)", ["read_pool::Reader", "read_pool::{impl", "read_pool::"]),
    ("apply thread (SQLite writes)", ["driver::apply", "SqliteStateMachine"]),
    ("persist thread (log append, fsync)", ["driver::persist", "log_store::"]),
    ("Raft event loop (core + driver)", ["driver::event_loop", "resqlite_raft::core"]),
    ("gRPC between nodes (tonic, hyper, h2)", ["h2::", "hyper::", "tonic::", "transport::peer", "transport::server"]),
    ("PostgreSQL wire + session (wire crate, node)", ["resqlite_wire::", "resqlite::node"]),
    ("tokio scheduler (wake, park, steal)", ["tokio::runtime"]),
]


def categorize(frames):
    for name, patterns in CATEGORIES:
        for f in frames:
            if any(p in f for p in patterns):
                return name
    return "other"


def samples(lines):
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            sym = parts[1] if len(parts) > 1 else parts[0]
            frames.append(sym.rsplit(" (", 1)[0])
        else:
            frames = []
    if frames:
        yield frames


def main():
    counts = collections.Counter()
    tops = collections.defaultdict(collections.Counter)
    total = 0
    for frames in samples(sys.stdin):
        total += 1
        cat = categorize(frames)
        counts[cat] += 1
        tops[cat][frames[0][:90]] += 1
    if not total:
        sys.exit("no samples")
    print(f"{total} samples")
    for cat, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {cat}")
        for sym, m in tops[cat].most_common(3):
            print(f"           {100 * m / total:4.1f}%  {sym}")


if __name__ == "__main__":
    main()
