"""CSV import without loading the file: rows per second and peak memory of the import's row pipeline
(decode, parse, validate, consent, custom fields, duplicate check) on a generated file, next to a plain
`csv.reader` pass over the same file in the same run (the floor).

    .venv/bin/python -m bench.import_rows [--rows 1000000]

Kafka and MongoDB are not in this figure: the pipeline publishes per batch of 1,000 rows, so the file
never sits in memory whatever the broker's speed.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from herald_subscriptions.domain import ListState, SubscriptionError
from herald_subscriptions.importer import SeenAddresses, Unreadable, _parse_row, _rows

LIST = ListState("acc", "news", "News", "single", {"city": "text", "age": "number"})


def make_file(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["email", "first_name", "last_name", "consent_method", "consent_at", "consent_ip", "city",
                         "age"])
        for i in range(rows):
            email = f"person{i}@example.com" if i % 50 else "not-an-address"
            writer.writerow([email, f"First{i}", f"Last{i}", "webinar signup form", "2026-10-01T10:00:00+00:00",
                             f"198.51.{i % 256}.{i % 200}", "Riga" if i % 2 else "Tartu", str(20 + i % 60)])


def baseline(raw: IO[bytes]) -> int:
    import io

    return sum(1 for _ in csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), delimiter=";")) - 1


def pipeline(raw: IO[bytes]) -> int:
    header, rows = _rows(raw)
    seen = SeenAddresses()
    accepted = 0
    for _, values in rows:
        if isinstance(values, Unreadable):
            continue
        try:
            request = _parse_row(header, values, LIST)
        except SubscriptionError:
            continue
        accepted += seen.add(request.email)
    return accepted


def worker(kind: str, path: Path) -> None:
    """Runs in its own process so its peak RSS is its own; both kinds import the same modules."""
    with path.open("rb") as raw:
        started = time.perf_counter()
        result = (baseline if kind == "baseline" else pipeline)(raw)
        print(time.perf_counter() - started, result)


def measure(kind: str, path: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, rows) of one worker process."""
    child = subprocess.Popen([sys.executable, "-m", "bench.import_rows", "--worker", kind, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{kind} worker failed")
    seconds, rows = output.split()
    return float(seconds), usage.ru_maxrss / 1024, int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subscribers.csv"
        make_file(path, args.rows)
        size = path.stat().st_size / 2**20
        base_s, base_mb, counted = measure("baseline", path)
        ours_s, ours_mb, accepted = measure("pipeline", path)
    print(f"file: {args.rows:,} rows, {size:.0f} MiB")
    print(f"csv.reader (baseline): {counted / base_s:10,.0f} rows/s   peak RSS {base_mb:6.1f} MiB")
    print(f"import pipeline:       {args.rows / ours_s:10,.0f} rows/s   peak RSS {ours_mb:6.1f} MiB   "
          f"({accepted:,} rows accepted)")
    print(f"ratios: speed {base_s / ours_s:.3f} of csv.reader; memory above csv.reader {ours_mb - base_mb:.0f} MiB "
          f"= {(ours_mb - base_mb) / size:.2f} x the file")


if __name__ == "__main__":
    main()
