"""The raw JSON: run metadata, one record per point, written atomically and often, so a run killed by a timeout
still leaves every point measured so far. `validate` checks the schema (the tests and the report use it)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCHEMA = "equitriton-md/sh-bench/1"
STATUSES = ("ok", "wrong", "error", "skipped", "unsupported")
POINT_KEYS = {
    "impl": str,
    "direction": str,
    "ls": list,
    "lset": str,
    "dtype": str,
    "n": int,
    "dim": int,
    "bytes": int,
    "status": str,
    "reason": (str, type(None)),
    "ms": (float, int, type(None)),
    "gbps": (float, int, type(None)),
    "frac_copy": (float, int, type(None)),
    "rel_err": (float, int, type(None)),
    "tol": (float, int, type(None)),
    "pool": (int, type(None)),
    "pool_bytes": (int, type(None)),
    "seconds": (float, int, type(None)),
}
META_KEYS = ("date_utc", "command", "quick", "device", "versions", "git", "copy_gbps", "timing", "bytes_model", "impls")


def _cmd(args: list[str]) -> str | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except Exception:
        return None


def driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None where it is missing."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = _cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def device_info(device) -> dict:
    import torch

    info = {"type": device.type, "name": platform.processor() or "cpu", "driver": None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            name=p.name,
            capability=f"{p.major}.{p.minor}",
            sm_count=p.multi_processor_count,
            memory_bytes=p.total_memory,
            l2_bytes=getattr(p, "L2_cache_size", None),
            driver=driver_version(),
            cuda_runtime=torch.version.cuda,
        )
    return info


def versions() -> dict:
    import e3nn
    import torch

    try:
        import triton

        tv = triton.__version__
    except Exception:
        tv = None
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": tv, "e3nn": e3nn.__version__}


def git_state(repo: Path) -> dict:
    commit = _cmd(["git", "-C", str(repo), "rev-parse", "HEAD"])
    status = _cmd(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def point_key(p: dict) -> tuple:
    return (p["impl"], p["direction"], p["lset"], p["dtype"], p["n"])


# A round's fields that are kept per round on a point measured in several rounds (`rounds_<field>`)
ROUND_FIELDS = ("ms", "device_ms", "seconds")


def merge_rounds(recs: list[dict]) -> dict:
    """One point measured in several rounds (sh_bench --rounds), as one record. A round that went wrong or failed
    ("wrong", "error") is the record: a point is not measured when any of its rounds is not right. Otherwise the
    measured rounds count, rounds skipped (by the deadline) do not: the record is the measured round whose `ms` is
    the median (the lower middle one for an even count), every field of it that round's own, with each round's
    `ms`, `device_ms` and `seconds` in run order beside it (`rounds_ms`, ...) and `rounds` (how many were measured)."""
    if len(recs) == 1:
        return recs[0]
    bad = [r for r in recs if r["status"] in ("wrong", "error")]
    ok = [r for r in recs if r["status"] == "ok"]
    if bad or not ok:
        return dict((bad or recs)[0], rounds=len(ok))
    median = sorted(ok, key=lambda r: r["ms"])[(len(ok) - 1) // 2]
    out = dict(median, rounds=len(ok))
    for f in ROUND_FIELDS:
        if any(f in r for r in ok):
            out[f"rounds_{f}"] = [r.get(f) for r in ok]
    return out


class Writer:
    """Holds the document; `flush()` rewrites the file atomically (at most every `every_s` unless forced). A point
    added again (a later round of sh_bench --rounds) replaces its record by `merge_rounds` of all its rounds."""

    def __init__(self, path: Path, meta: dict, every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.doc = {"schema": SCHEMA, "meta": meta, "points": [], "finished": False}
        self.every_s = every_s
        self._last = 0.0
        self._rounds: dict[tuple, tuple[int, list[dict]]] = {}  # key -> (index in points, its round records)

    def add(self, rec: dict) -> None:
        key = point_key(rec)
        if key in self._rounds:
            i, recs = self._rounds[key]
            recs.append(rec)
            self.doc["points"][i] = merge_rounds(recs)
        else:
            self._rounds[key] = (len(self.doc["points"]), [rec])
            self.doc["points"].append(rec)
        self.flush()

    def flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.every_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        # compact: the document is rewritten while the GPU waits for the next point (indent=1 costs 4x the time)
        tmp.write_text(json.dumps(self.doc, default=str) + "\n")
        os.replace(tmp, self.path)
        self._last = time.monotonic()


def validate(doc: dict) -> list[str]:
    """Schema problems of a results document (empty list: valid)."""
    errs = []
    if doc.get("schema") != SCHEMA:
        errs.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        return errs + ["meta missing"]
    errs += [f"meta.{k} missing" for k in META_KEYS if k not in meta]
    for i, p in enumerate(doc.get("points", [])):
        for k, t in POINT_KEYS.items():
            if k not in p:
                errs.append(f"points[{i}].{k} missing")
            elif not isinstance(p[k], t) or (t is int and isinstance(p[k], bool)):
                errs.append(f"points[{i}].{k} has type {type(p[k]).__name__}")
        if p.get("status") not in STATUSES:
            errs.append(f"points[{i}].status {p.get('status')!r} not in {STATUSES}")
        if p.get("status") == "ok" and not (isinstance(p.get("ms"), (int, float)) and p["ms"] > 0):
            errs.append(f"points[{i}] is ok without a positive ms")
        if p.get("status") in ("skipped", "unsupported", "error", "wrong") and not p.get("reason"):
            errs.append(f"points[{i}] is {p.get('status')} without a reason")
    return errs


def subset(doc: dict, spec: str) -> dict:
    """The run restricted to some (dtype, l set) pairs, spec "float64:l<=6 [0,2,10];float32:l<=10" (l sets apart by
    spaces, since sparse ones hold commas), an l set optionally from some N on ("l<=12@2^20": N >= 2^20 only): for a
    run taken to re-measure what one change touched, so that merge() does not let its other points (e.g. timed while
    the host was busy, or of a build that a later change altered at other N) replace earlier ones."""
    keep: dict = {}
    for part in spec.split(";"):
        dtype, _, lsets = part.partition(":")
        if dtype.strip() not in ("float64", "float32") or not lsets.strip():
            raise ValueError(f"--only wants 'float64:l<=6 [0,2,10];float32:...', got {part!r}")
        for token in lsets.split():
            ls, _, n_min = token.partition("@")
            base, _, exp = n_min.partition("^")
            if n_min and not (base.isdigit() and (not exp or exp.isdigit())):
                raise ValueError(f"--only: '{token}' wants an l set, optionally '@N' or '@2^k', got {n_min!r}")
            keep[(dtype.strip(), ls)] = int(base) ** int(exp or 1) if n_min else 0
    points = [p for p in doc["points"] if p["n"] >= keep.get((p["dtype"], p["lset"]), float("inf"))]
    if not points:
        raise ValueError(f"--only {spec!r} keeps no point of the run")
    meta = dict(doc["meta"], only=spec)
    return dict(doc, meta=meta, points=points)


def merge(docs: list[dict]) -> dict:
    """Several runs as one document, oldest first. A point measured ("ok") in a later run replaces the same point
    (impl, direction, l set, dtype, N) of an earlier one; otherwise the earlier record stays. Each point gets
    `run` (its run's index); `meta` is the newest run's, with `meta["impls"]` the union over the runs and
    `meta["runs"]` listing every run (date, command, device, copy bandwidth) so the page can say where each number
    comes from."""
    if len(docs) == 1:
        return docs[0]
    points: dict = {}
    for i, doc in enumerate(docs):
        for p in doc["points"]:
            key = point_key(p)
            if key not in points or p["status"] == "ok":
                points[key] = dict(p, run=i)
    meta = dict(docs[-1]["meta"])
    # implementations of every run (an older run may hold peers the newest one did not measure), newest first; a
    # run that did not start a peer (a run of ours alone) does not hide the run that measured it
    impls: dict = {}
    for d in reversed(docs):
        for name, info in (d["meta"].get("impls") or {}).items():
            if name not in impls or (info.get("available") and not impls[name].get("available")):
                impls[name] = info
    meta["impls"] = impls
    # the peer packages of the newest run that carried any (a run of ours alone carries none); launch counts and
    # compile times case by case, the newest run's where several measured a case (a run re-measuring two l sets
    # must not drop the others; a run whose counting child timed out holds only the error)
    manifests = [d["meta"]["peers_manifest"] for d in docs if d["meta"].get("peers_manifest")]
    if manifests:
        meta["peers_manifest"] = manifests[-1]
    counts: dict = {}
    for d in docs:
        for r in d["meta"].get("launches") or []:
            if "kernels" in r:
                counts[(tuple(r["ls"]), r["direction"], r.get("n"))] = r
    if counts:
        meta["launches"] = list(counts.values())
    compiles: dict = {}
    for d in docs:
        for job in (d["meta"].get("warm") or {}).get("jobs") or []:
            compiles[job["id"]] = job
    if compiles:
        meta["warm"] = dict(meta.get("warm") or {}, jobs=list(compiles.values()))
    meta["runs"] = [
        {k: d["meta"].get(k) for k in ("date_utc", "command", "copy_gbps", "elapsed_s", "only")}
        | {"device": (d["meta"].get("device") or {}).get("name"), "finished": d.get("finished")}
        | {"rounds": (d["meta"].get("timing") or {}).get("rounds", 1)}
        for d in docs
    ]
    return {
        "schema": SCHEMA,
        "meta": meta,
        "points": list(points.values()),
        "finished": all(d.get("finished") for d in docs),
    }


def command_line() -> str:
    return " ".join([Path(sys.executable).name] + sys.argv)
