"""How much the contract costs a consumer: events validated per second by `parse_event`, against plain
`json.loads` of the same bytes measured in the same run (the floor every consumer pays).

    .venv/bin/python -m bench.contract_parse [--events 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from herald_shared.contract import parse_event, serialize_event
from tests.samples import all_samples


def best_rate(action: Callable[[bytes], object], values: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for value in values:
            action(value)
        best = min(best, time.perf_counter() - started)
    return len(values) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kinds = [serialize_event(e) for e in all_samples()]
    values = [kinds[i % len(kinds)] for i in range(args.events)]
    baseline = best_rate(json.loads, values, args.rounds)
    contract = best_rate(parse_event, values, args.rounds)
    print(f"events: {args.events} ({len(kinds)} types, mean {sum(map(len, values)) / len(values):.0f} bytes)")
    print(f"json.loads (baseline): {baseline:12,.0f} events/s")
    print(f"parse_event:           {contract:12,.0f} events/s")
    print(f"ratio parse_event / json.loads: {contract / baseline:.2f}")


if __name__ == "__main__":
    main()
