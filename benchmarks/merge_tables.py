"""Merge launch tables written by parallel sweeps (tune_kernels.py --write-table) into one: later files win.

python benchmarks/merge_tables.py equitriton/kernels/tuned.json part1.json part2.json
"""

from __future__ import annotations

import json
import os
import sys


def update_table(path: str, configs: dict, sources: list[str]) -> None:
    """Put `configs` into the launch table at `path` (made if missing), entry over entry, and add `sources`."""
    table = {"source": [], "configs": {}}
    if os.path.exists(path):
        with open(path) as f:
            table = json.load(f)
    table["configs"].update(configs)
    table["source"] = sorted(set(table["source"]) | set(sources))
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)


def merge(target: str, parts: list[str]) -> None:
    if not os.path.exists(target):  # the launch table is merged into, never made from the parts alone
        raise FileNotFoundError(target)
    for path in parts:
        with open(path) as f:
            part = json.load(f)
        update_table(target, part["configs"], part["source"])


if __name__ == "__main__":
    merge(sys.argv[1], sys.argv[2:])
