"""The paper's four file-based workloads, generated as SQL files.

The paper (Muindi et al., "ReSQLite", section 4.2) timed four SQL files run
one statement at a time: read-only, write-only, read-heavy and write-heavy,
built from the Chinook sample database. Its files (data/benchmarks/ in the
original Go repository) are:

- wOnly: a dump of Chinook, about 15,600 single-row INSERTs (plus CREATEs);
- rOnly: the three queries of reads.sql repeated, about 11,900 SELECTs, run on
  a database already holding Chinook;
- wHeavy: CREATEs and about 3,300 single-row INSERTs, then about 2,500 of
  the SELECTs (counts estimated from the file's size: its 258 KB of INSERTs
  and 192 KB of SELECTs);
- rHeavy: CREATEs and INSERTs, then SELECTs; the text says "7-8 read
  queries for every write query", which is the ratio used here (525 writes,
  3,675 reads at scale 1).

The rows are not Chinook's: they are generated, deterministically from a
seed, with Chinook's table sizes (275 artists, 347 albums, 3,503 tracks,
then more tracks if a workload needs more rows) and similar value lengths.
`scale` multiplies every statement count (1.0 = the paper's counts); the
read-only preload is always the full 4,125 rows. Writes come first, then the
reads, as in the paper's files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

ARTISTS = 275
ALBUMS = 347
TRACKS = 3503

# Statement counts at scale 1.0: (writes, reads).
PAPER_COUNTS = {
    "read-only": (0, 11859),
    "write-only": (15607, 0),
    "read-heavy": (525, 3675),
    "write-heavy": (3300, 2500),
}

# The paper's reported time ratios to plain sqlite3 (section 4.2):
# (1-node ReSQLite / sqlite3, 3-node ReSQLite / sqlite3, how the paper said it).
PAPER_OVERHEAD = {
    "read-only": (14.1 / 41.4, 28.5 / 41.4, "41.4 s sqlite3, 14.1 s 1-node, 28.5 s 3-node"),
    "write-only": (2.8, 5.6, "about 2.8x and 5.6x"),
    "read-heavy": (0.6, 1.5, "1-node 'about 40% faster', 3-node 'about 1.5x slower'"),
    "write-heavy": (1.8, 3.7, "about 1.8x and 3.7x"),
}

WORKLOADS = list(PAPER_COUNTS)

_WORDS = (
    "love night heart rock blues live time road fire rain dream soul city "
    "river moon sun song dance world life light blue black gold wild man "
    "woman king queen street home baby girl boy angel devil summer winter "
    "sky star ocean stone iron steel shadow ghost train highway paradise "
    "symphony concerto allegro andante op no suite prelude remix version"
).split()


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _title(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS).capitalize() for _ in range(rng.randint(lo, hi)))


def _rows(seed: int):
    """Yields (table, values-tuple-as-SQL) in insertion order, without end."""
    rng = random.Random(seed)
    for i in range(1, ARTISTS + 1):
        yield "artists", f"({i}, {_q(_title(rng, 1, 3))})"
    for i in range(1, ALBUMS + 1):
        yield "albums", f"({i}, {_q(_title(rng, 2, 5))}, {rng.randint(1, ARTISTS)})"
    i = 0
    while True:
        i += 1
        album = rng.randint(1, ALBUMS)
        composer = "NULL" if rng.random() < 0.28 else _q(
            " & ".join(_title(rng, 2, 2) for _ in range(rng.randint(1, 3)))
        )
        ms = rng.randint(60_000, 600_000)
        yield "tracks", (
            f"({i}, {_q(_title(rng, 2, 6))}, {album}, {rng.randint(1, 5)}, "
            f"{rng.randint(1, 25)}, {composer}, {ms}, {ms * 16 + rng.randint(0, 99999)}, "
            f"{rng.choice(('0.99', '1.99'))})"
        )


def _insert(table: str, values: str) -> str:
    return f"INSERT INTO {table} VALUES {values};\n"


def _sql_lines(name: str) -> list[str]:
    """The file's lines without comment lines (the comments are for readers)."""
    return [
        line + "\n"
        for line in (HERE / name).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("--")
    ]


def _schema() -> str:
    return "".join(_sql_lines("schema.sql"))


def _reads(n: int) -> str:
    queries = _sql_lines("reads.sql")
    return "".join(queries[i % len(queries)] for i in range(n))


def _preload(seed: int) -> str:
    """Full Chinook-sized data in a few multi-row INSERTs (fast on any system)."""
    out, batch, table = [], [], None
    total = ARTISTS + ALBUMS + TRACKS
    for n, (t, values) in enumerate(_rows(seed)):
        if n == total:
            break
        if (t != table or len(batch) == 500) and batch:
            out.append(f"INSERT INTO {table} VALUES\n" + ",\n".join(batch) + ";\n")
            batch = []
        table = t
        batch.append(values)
    out.append(f"INSERT INTO {table} VALUES\n" + ",\n".join(batch) + ";\n")
    return "".join(out)


@dataclass
class Workload:
    name: str
    writes: int
    reads: int
    setup: Path  # run untimed before the timed file (may be empty)
    run: Path  # the timed file


def generate(out_dir: Path, scale: float, seed: int = 1) -> dict[str, Workload]:
    """Writes <name>.setup.sql and <name>.sql for every workload into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, (w, r) in PAPER_COUNTS.items():
        writes = round(w * scale)
        reads = round(r * scale / 3) * 3 if r else 0
        if r and reads == 0:
            reads = 3
        if w and writes == 0:
            writes = 1
        setup = out_dir / f"{name}.setup.sql"
        run = out_dir / f"{name}.sql"
        if name == "read-only":
            setup.write_text(_schema() + _preload(seed))
            body = _reads(reads)
        else:
            setup.write_text("")
            rows = _rows(seed)
            body = _schema() + "".join(_insert(*next(rows)) for _ in range(writes)) + _reads(reads)
        run.write_text(body)
        result[name] = Workload(name, writes, reads, setup, run)
    return result


def expected_counts(writes: int) -> dict[str, int]:
    """Rows each table holds after `writes` single-row INSERTs of _rows()."""
    a = min(writes, ARTISTS)
    b = min(max(writes - ARTISTS, 0), ALBUMS)
    t = max(writes - ARTISTS - ALBUMS, 0)
    return {"artists": a, "albums": b, "tracks": t}


PRELOAD_COUNTS = {"artists": ARTISTS, "albums": ALBUMS, "tracks": TRACKS}
