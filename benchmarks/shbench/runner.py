"""Runs the plan: each point waits for its compile jobs, passes the budgets (deadline, predicted call time, memory),
is checked against its float64 reference, and only then timed. Every failure is caught and recorded on its point;
a CUDA error that breaks the context stops the run with the remaining points recorded as skipped."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from .points import OURS, Point, lset_label, predicted_ms, static_exclusion
from .reference import check_rows, reference, rel_err
from .timing import MAX_GRAPHS, bench_ms, calls, inputs_of, kernels_launched, make_pool, pool_size, probe_ms, sync

# max |out - ref| / max |ref| allowed before a point is timed. Ours: float64-exact kernels, float32 computed in
# float64 and rounded once. Peers: looser, so a peer is timed unless it is wrong (its error is recorded either way).
TOL = {
    (True, "float64"): 1e-11,
    (True, "float32"): 1e-6,
    (False, "float64"): 1e-6,
    (False, "float32"): 1e-3,
}


@dataclass
class Budget:
    deadline: float  # time.monotonic() after which no point starts
    compile_deadline: float  # time.monotonic() at which the compile workers are stopped
    compile_s: float  # the compile budget in seconds (for messages)
    max_call_ms: float  # a point predicted slower than this per call is skipped, and the larger N of its group
    warmup_ms: float
    rep_ms: float
    mem_fraction: float = 0.85


def compile_jobs(points: list[Point], impls: dict, avail: dict) -> list[dict]:
    """Compile jobs of the planned points of available implementations (deduplicated)."""
    out = {}
    for p in points:
        if static_exclusion(p) is None and avail[p.impl]["available"]:
            for j in impls[p.impl].jobs_for(p):
                out[j["id"]] = j
    return list(out.values())


class Runner:
    def __init__(self, impls, avail, device, writer, warm, budget: Budget, copy_gbps: float, l2: int) -> None:
        self.impls, self.avail, self.device = impls, avail, device
        self.writer, self.warm, self.budget = writer, warm, budget
        self.copy_gbps, self.l2 = copy_gbps, l2
        self.measured: dict[tuple, dict[int, float]] = defaultdict(dict)
        self.slow: dict[tuple, str] = {}  # group -> reason its larger N are skipped
        self.slow_n: dict[tuple, int] = {}
        self.context_lost: str | None = None

    # ------------------------------------------------------------------------------------------------ scheduling
    def run(self, points: list[Point]) -> None:
        pending = []
        for p in points:
            ex = static_exclusion(p)
            if ex is not None:
                self.writer.add(p.record(*ex))
            elif not self.avail[p.impl]["available"]:
                self.writer.add(p.record("skipped", "unavailable: " + str(self.avail[p.impl]["reason"])))
            else:
                pending.append((p, [j["id"] for j in self.impls[p.impl].jobs_for(p)]))
        while pending:
            now = time.monotonic()
            self.warm.close_if_done()
            if not self.warm.finished and now > self.budget.compile_deadline:
                self.warm.stop(
                    f"still compiling when the compile phase ended (--compile-budget-s {self.budget.compile_s:.0f})"
                )
            if now > self.budget.deadline or self.context_lost:
                reason = self.context_lost or "deadline reached (--deadline-s) before this point started"
                for p, _ in pending:
                    self.writer.add(p.record("skipped", reason))
                return
            i = next((k for k, (_, ids) in enumerate(pending) if self._ready(ids) != "pending"), None)
            if i is None:
                time.sleep(0.2)
                continue
            p, ids = pending.pop(i)
            failed = [j for j in ids if self.warm.state(j) == "failed"]
            if failed:
                self.writer.add(p.record("skipped", f"compile job {failed[0]} failed: {self.warm.error(failed[0])}"))
            else:
                self.writer.add(self.run_point(p))

    def _ready(self, ids) -> str:
        states = [self.warm.state(j) for j in ids]
        return "pending" if "pending" in states else "ready"

    # ------------------------------------------------------------------------------------------------ one point
    def run_point(self, p: Point) -> dict:
        t0 = time.monotonic()
        rec = self._measure(p)  # its buffers are released when it returns
        if self.device.type == "cuda" and (rec["status"] == "error" or (rec["pool_bytes"] or 0) > 2**30):
            torch.cuda.empty_cache()
        rec["seconds"] = round(time.monotonic() - t0, 3)
        return rec

    def _measure(self, p: Point) -> dict:
        if p.direction == "forward_backward_graph" and self.device.type != "cuda":
            return p.record("skipped", "CUDA graphs need a CUDA device")
        if p.group in self.slow and p.n > self.slow_n[p.group]:
            return p.record("skipped", self.slow[p.group])
        pred = predicted_ms(p, self.measured)
        if pred is not None and pred > self.budget.max_call_ms:
            reason = (
                f"predicted {pred:.0f} ms per call from its group, over --max-call-ms {self.budget.max_call_ms:.0f}"
            )
            return p.record("skipped", reason)
        dtype = getattr(torch, p.dtype)
        ours = p.impl == OURS
        tol = TOL[(ours, p.dtype)]
        try:
            prepared = self.impls[p.impl].prepare(p.ls, dtype, self.device)
            too_big = self._memory_check(p, prepared.out_dim, ours)
            if too_big:
                return p.record("skipped", too_big)
            set_bytes = self._set_bytes(p, prepared.out_dim)
            cap = MAX_GRAPHS if p.direction == "forward_backward_graph" else None
            free = self._free_bytes()
            npool = pool_size(set_bytes, self.l2, int(0.3 * free), cap)
            pool = make_pool(p.direction, p.n, prepared.out_dim, dtype, self.device, npool, seed=p.n)
            timed, first = calls(prepared, p.direction, pool, self.device)
            outs = first()
            sync(self.device)
            rows = check_rows(p.n, self.device)
            sub = [None if t is None else t[rows] for t in (pool.x[0], pool.g[0], pool.w[0])]
            err = rel_err(tuple(o[rows] for o in outs), reference(p.direction, prepared.reference, *sub))
            del outs
            fields = dict(rel_err=err, tol=tol, pool=pool.size, pool_bytes=pool.nbytes)
            if not err <= tol:
                return p.record("wrong", f"max relative error {err:.3g} > tolerance {tol:.0e}: not timed", **fields)
            probe = probe_ms(timed, self.device)
            if probe > self.budget.max_call_ms:
                self.slow[p.group] = f"N={p.n} took {probe:.0f} ms per call, over --max-call-ms: larger N skipped"
                self.slow_n[p.group] = p.n
                reason = f"one call took {probe:.0f} ms, over --max-call-ms {self.budget.max_call_ms:.0f}: not timed"
                return p.record("skipped", reason, **fields)
            # at least ~5 repetitions of long calls (do_bench repeats rep_ms / call time times)
            ms = bench_ms(timed, self.device, self.budget.warmup_ms, max(self.budget.rep_ms, min(5 * probe, 1000)))
            self.measured[p.group][p.n] = ms
            gbps = p.bytes / ms / 1e6
            return p.record("ok", None, ms=ms, gbps=gbps, frac_copy=gbps / self.copy_gbps, **fields)
        except torch.cuda.OutOfMemoryError as e:
            return p.record("error", "out of memory: " + str(e).splitlines()[0][:300])
        except Exception as e:
            self._check_context(p, e)
            return p.record("error", f"{type(e).__name__}: {e}"[:800])

    def _set_bytes(self, p: Point, out_dim: int) -> int:
        widths = {"x": 3, "g": out_dim, "w": 3}
        return p.n * sum(widths[k] for k in inputs_of(p.direction)) * (8 if p.dtype == "float64" else 4)

    def _free_bytes(self) -> int:
        if self.device.type != "cuda":
            return 8 * 2**30
        return torch.cuda.mem_get_info(self.device)[0]

    def _memory_check(self, p: Point, out_dim: int, ours: bool) -> str | None:
        """A reason to skip when two pool entries plus the outputs (and a peer's intermediates) cannot fit."""
        item = 8 if p.dtype == "float64" else 4
        width = {"forward": out_dim, "backward": 3}.get(p.direction, out_dim + 3)
        outputs = p.n * width * item
        need = 2 * self._set_bytes(p, out_dim) + outputs * (1 if ours else 6)
        free = self._free_bytes()
        if need > self.budget.mem_fraction * free:
            return f"needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free on the device"
        return None

    def _check_context(self, p: Point, e: Exception) -> None:
        if self.device.type != "cuda":
            return
        try:
            torch.cuda.synchronize(self.device)
        except Exception as e2:
            self.context_lost = (
                f"CUDA context lost after {p.impl} {p.direction} {lset_label(p.ls)} {p.dtype} N={p.n}: "
                f"{type(e).__name__}: {e}; {e2}"[:500]
            )

    # ------------------------------------------------------------------------------------------------ launches
    def count_launches(self, lsets, n: int = 2**12) -> list[dict]:
        """GPU kernels per call of our ops and of autograd through our public API, at N = n, float64."""
        if OURS not in self.impls or self.device.type != "cuda":
            return []
        out = []
        for ls in lsets:
            if time.monotonic() > self.budget.deadline:
                break
            try:
                prep = self.impls[OURS].prepare(ls, torch.float64, self.device)
                x = torch.randn(n, 3, dtype=torch.float64, device=self.device)
                g = torch.randn(n, prep.out_dim, dtype=x.dtype, device=self.device)
                for d, fn in _launch_calls(prep, x, g).items():
                    names = kernels_launched(fn, self.device)
                    rec = {"ls": list(ls), "direction": d, "n": n, "kernels": len(names), "names": sorted(set(names))}
                    out.append(rec)
            except Exception as e:
                out.append({"ls": list(ls), "error": f"{type(e).__name__}: {e}"[:300]})
        return out


def _launch_calls(prep, x, g) -> dict:
    xl = x.clone().requires_grad_(True)
    return {
        "forward": lambda: prep.forward(x),
        "backward": lambda: prep.backward(x, g),
        "forward_backward": lambda: prep.forward_backward(xl, g),
        "double_backward": lambda: prep.double_backward(x, g, x),
    }
