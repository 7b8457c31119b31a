"""benchmarks/merge_tables.py: parallel sweeps' launch tables merged into one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from merge_tables import merge  # noqa: E402


def test_later_parts_win_and_sources_are_kept(tmp_path):
    def write(name, configs, source):
        path = tmp_path / name
        path.write_text(json.dumps({"configs": configs, "source": [source]}))
        return str(path)

    target = write("tuned.json", {"backward/2/float64": {"BLOCK": 64}, "forward/2/float64": {"BLOCK": 32}}, "old")
    a = write("a.json", {"backward/2/float64": {"BLOCK": 128}}, "sweep a")
    b = write("b.json", {"backward/2/float64": {"BLOCK": 32, "LOAD_FENCE": True}}, "sweep b")
    merge(target, [a, b])
    table = json.loads(Path(target).read_text())
    assert table["configs"]["backward/2/float64"] == {"BLOCK": 32, "LOAD_FENCE": True}
    assert table["configs"]["forward/2/float64"] == {"BLOCK": 32}
    assert table["source"] == ["old", "sweep a", "sweep b"]


def test_a_missing_launch_table_is_not_made_from_the_parts(tmp_path):
    part = tmp_path / "a.json"
    part.write_text(json.dumps({"configs": {}, "source": ["sweep a"]}))
    with pytest.raises(FileNotFoundError):
        merge(str(tmp_path / "tuned.json"), [str(part)])
