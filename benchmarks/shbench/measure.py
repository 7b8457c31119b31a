"""Measures one point inside an implementation's child process (see isolate.py): prepare the callables, check the
memory, build the rotating pool, compare the first call with the float64 reference, probe one call, and only then
time it. Every Python-level failure becomes the point's record; a failure that leaves the CUDA context broken is
reported as `context_lost`, after which the child exits and the parent starts a fresh one."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .points import OURS, Point, lset_label
from .reference import check_rows, reference, rel_err
from .timing import MAX_GRAPHS, bench_ms, calls, device_times, make_pool, pool_size, probe_ms, set_bytes, sync

# from this N on, each point's GPU time is also measured (timing.device_times): the bandwidth targets are set at 2^22
DEVICE_TIME_MIN_N = 2**20

# max |out - ref| / max |ref| allowed before a point is timed. Ours: float64-exact kernels, float32 computed in
# float64 and rounded once. Peers: looser, so a peer is timed unless it is wrong (its error is recorded either way).
TOL = {
    (True, "float64"): 1e-11,
    (True, "float32"): 1e-6,
    (False, "float64"): 1e-6,
    (False, "float32"): 1e-3,
}
# EQUITRITON_FLOAT32_COMPUTE=float32 (native float32 arithmetic, an opt-in): its error is 1-3x e3nn's float32 error
# (up to 4.1e-6 at l_max 12, docs/performance_notes.md), so it is checked at e3nn's float32 scale instead
NATIVE_F32_TOL = 1e-5


def tolerance(ours: bool, dtype: str) -> float:
    """The max relative error a point may have before it is timed."""
    from equitriton.kernels import launch

    if ours and dtype == "float32" and launch.FLOAT32_COMPUTE == "float32":
        return NATIVE_F32_TOL
    return TOL[(ours, dtype)]


@dataclass
class Limits:
    """What one measurement may cost (the deadline is the parent's business)."""

    max_call_ms: float  # a point whose single call takes longer is not timed, and its group's larger N are skipped
    warmup_ms: float
    rep_ms: float
    mem_fraction: float = 0.85


@dataclass
class Outcome:
    record: dict
    slow: str | None = None  # set when the group's larger N must be skipped (one call over max_call_ms)
    context_lost: str | None = None  # set when the CUDA context is broken: the child must not measure again


class Measurer:
    def __init__(self, impl, device: torch.device, limits: Limits, copy_gbps: float, l2: int) -> None:
        self.impl, self.device, self.limits = impl, device, limits
        self.copy_gbps, self.l2 = copy_gbps, l2

    def run_point(self, p: Point) -> Outcome:
        t0 = time.monotonic()
        out = self._measure(p)  # its buffers are released when it returns
        if self.device.type == "cuda" and not out.context_lost:
            # other children share the device: give back what this point cached
            if out.record["status"] == "error" or (out.record["pool_bytes"] or 0) > 2**28:
                torch.cuda.empty_cache()
        out.record["seconds"] = round(time.monotonic() - t0, 3)
        return out

    def _measure(self, p: Point) -> Outcome:
        dtype = getattr(torch, p.dtype)
        ours = p.impl == OURS
        tol = tolerance(ours, p.dtype)
        try:
            prepared = self.impl.prepare(p.ls, dtype, self.device)
            too_big = self._memory_check(p, prepared.out_dim, ours)
            if too_big:
                return Outcome(p.record("skipped", too_big))
            entry = set_bytes(p.direction, p.n, prepared.out_dim, 8 if p.dtype == "float64" else 4)
            cap = MAX_GRAPHS if p.direction == "forward_backward_graph" else None
            npool = pool_size(entry, self.l2, int(0.3 * self._free_bytes()), cap)
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
                return Outcome(
                    p.record("wrong", f"max relative error {err:.3g} > tolerance {tol:.0e}: not timed", **fields)
                )
            probe = probe_ms(timed, self.device)
            if probe > self.limits.max_call_ms:
                reason = f"one call took {probe:.0f} ms, over --max-call-ms {self.limits.max_call_ms:.0f}: not timed"
                slow = f"N={p.n} took {probe:.0f} ms per call, over --max-call-ms: larger N skipped"
                return Outcome(p.record("skipped", reason, **fields), slow=slow)
            # at least ~5 repetitions of long calls (do_bench repeats rep_ms / call time times)
            ms = bench_ms(timed, self.device, self.limits.warmup_ms, max(self.limits.rep_ms, min(5 * probe, 1000)))
            gbps = p.bytes / ms / 1e6
            if self.device.type == "cuda" and p.n >= DEVICE_TIME_MIN_N and p.direction != "forward_backward_graph":
                # the smaller of two upper bounds on the GPU time (timing.device_times); both are kept
                both = device_times(timed, self.device)
                dev = min(both.values())
                fields.update(device_ms=dev, device_gbps=p.bytes / dev / 1e6, **both)
                fields["device_frac_copy"] = fields["device_gbps"] / self.copy_gbps
            return Outcome(p.record("ok", None, ms=ms, gbps=gbps, frac_copy=gbps / self.copy_gbps, **fields))
        except torch.cuda.OutOfMemoryError as e:
            return Outcome(p.record("error", "out of memory: " + str(e).splitlines()[0][:300]))
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"[:800]
            return Outcome(p.record("error", reason), context_lost=self._context_lost(p, reason))

    def _free_bytes(self) -> int:
        if self.device.type != "cuda":
            return 8 * 2**30
        return torch.cuda.mem_get_info(self.device)[0]

    def _memory_check(self, p: Point, out_dim: int, ours: bool) -> str | None:
        """A reason to skip when two pool entries plus the outputs (and a peer's intermediates) cannot fit."""
        item = 8 if p.dtype == "float64" else 4
        width = {"forward": out_dim, "backward": 3}.get(p.direction, out_dim + 3)
        outputs = p.n * width * item
        need = 2 * set_bytes(p.direction, p.n, out_dim, item) + outputs * (1 if ours else 6)
        free = self._free_bytes()
        if need > self.limits.mem_fraction * free:
            return f"needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free on the device"
        return None

    def _context_lost(self, p: Point, reason: str) -> str | None:
        """After an exception: is the CUDA context still usable? (An illegal memory access poisons it for good.)"""
        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.synchronize(self.device)
            torch.zeros(1, device=self.device).add_(1).item()
            return None
        except Exception as e2:
            where = f"{p.impl} {p.direction} {lset_label(p.ls)} {p.dtype} N={p.n}"
            return f"CUDA context lost at {where}: {reason}; then {type(e2).__name__}: {e2}"[:800]


def count_launches(impl, device: torch.device, lsets, deadline: float, n: int = 2**12) -> list[dict]:
    """GPU kernels per call of our ops and of autograd through our public API, at N = n, float64 (ours only)."""
    from .timing import kernels_launched

    if device.type != "cuda":
        return []
    out = []
    for ls in lsets:
        if time.monotonic() > deadline:
            break
        try:
            prep = impl.prepare(tuple(ls), torch.float64, device)
            x = torch.randn(n, 3, dtype=torch.float64, device=device)
            g = torch.randn(n, prep.out_dim, dtype=x.dtype, device=device)
            for d, fn in _launch_calls(prep, x, g).items():
                names = kernels_launched(fn, device)
                out.append({"ls": list(ls), "direction": d, "n": n, "kernels": len(names), "names": sorted(set(names))})
        except Exception as e:
            out.append({"ls": list(ls), "error": f"{type(e).__name__}: {e}"[:300]})
    return out


def _launch_calls(prep, x, g) -> dict:
    xl, gl = x.clone().requires_grad_(True), g.clone().requires_grad_(True)
    return {
        "forward": lambda: prep.forward(x),
        "backward": lambda: prep.backward(x, g),
        "forward_backward": lambda: prep.forward_backward(xl, g),
        "double_backward": lambda: prep.double_backward(x, g, x),
        "training": lambda: prep.training(xl, gl, x),
    }
