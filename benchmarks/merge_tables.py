"""Merge launch tables written by parallel sweeps (tune_kernels.py --write-table) into one: later files win.

python benchmarks/merge_tables.py equitriton/kernels/tuned.json part1.json part2.json
"""

from __future__ import annotations

import json
import sys


def merge(target: str, parts: list[str]) -> None:
    with open(target) as f:
        table = json.load(f)
    for path in parts:
        with open(path) as f:
            part = json.load(f)
        table["configs"].update(part["configs"])
        table["source"] = sorted(set(table["source"]) | set(part["source"]))
    with open(target, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    merge(sys.argv[1], sys.argv[2:])
