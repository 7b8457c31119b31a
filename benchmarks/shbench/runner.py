"""Runs the plan from the parent process: each point waits for its compile jobs, passes the budgets (deadline,
predicted call time), and is sent to its implementation's child process (isolate.py), which checks it against the
float64 reference and times it (measure.py). The parent never runs a kernel under test, so nothing a peer does can
end the run: a child that dies, hangs or breaks its CUDA context costs the point in flight (recorded as an error
with the child's own error text) and the other points of that implementation at that N; a fresh child measures the
rest, up to MAX_CRASHES crashes per implementation."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass

from .isolate import ChildFailed, ChildProc
from .measure import TOL, tolerance  # noqa: F401  (re-exported: sh_bench.py describes the tolerances)
from .points import OURS, Point, lset_label, predicted_ms, static_exclusion

MAX_CRASHES = 3  # per implementation: then its remaining points are skipped (each restart costs seconds)


@dataclass
class Budget:
    deadline: float  # time.monotonic() after which no point starts
    hard_end: float  # time.monotonic() by which every child must have answered (later: killed, point recorded)
    compile_deadline: float  # time.monotonic() at which the compile workers are stopped
    compile_s: float  # the compile budget in seconds (for messages)
    max_call_ms: float  # a point predicted slower than this per call is skipped, and the larger N of its group
    point_timeout_s: float = 150.0  # one answer of a child (a cold compile or a sympy descriptor can take minutes)
    hello_timeout_s: float = 120.0  # a child's start (imports, CUDA init)

    def left(self, cap: float) -> float:
        return max(1.0, min(cap, self.hard_end - time.monotonic()))


def compile_jobs(points: list[Point], impls: dict) -> list[dict]:
    """Compile jobs of the planned points (deduplicated). Availability is only known once the children have
    started, so jobs of an unavailable peer are queued too; they fail at its import, in a second."""
    out = {}
    for p in points:
        if static_exclusion(p) is None:
            for j in impls[p.impl].jobs_for(p):
                out[j["id"]] = j
    return list(out.values())


class Children:
    """One live child process per implementation, restarted after a crash."""

    def __init__(self, cfg: dict, log_dir, extra_env: dict[str, dict]) -> None:
        self.cfg, self.log_dir, self.extra_env = cfg, log_dir, extra_env
        self.live: dict[str, ChildProc] = {}
        self.started: dict[str, int] = defaultdict(int)

    def get(self, impl: str) -> ChildProc:
        if impl not in self.live:
            child = ChildProc(impl, self.cfg, self.log_dir, self.started[impl], self.extra_env.get(impl))
            self.started[impl] += 1
            child.start()
            self.live[impl] = child
        return self.live[impl]

    def drop(self, impl: str) -> None:
        child = self.live.pop(impl, None)
        if child is not None:
            child.kill()

    def close_all(self, graceful: bool = True) -> None:
        """Ask every child to exit (graceful), or kill them at once (an interrupted run: a busy child would make
        the parent wait for its point)."""
        for impl in list(self.live):
            child = self.live.pop(impl)
            child.close() if graceful else child.kill()


class Runner:
    def __init__(self, impls, meta_impls: dict, children: Children, device, writer, warm, budget: Budget) -> None:
        self.impls, self.meta_impls, self.children = impls, meta_impls, children
        self.device, self.writer, self.warm, self.budget = device, writer, warm, budget
        self.measured: dict[tuple, dict[int, float]] = defaultdict(dict)
        self.slow: dict[tuple, tuple[int, str]] = {}  # group -> (N, reason its larger N are skipped)
        self.unavailable: dict[str, str] = {}
        self.crashes: dict[str, list[str]] = defaultdict(list)  # impl -> reasons
        self.crashed_at: dict[tuple[str, int], str] = {}  # (impl, N) -> reason its other points there are skipped

    # ------------------------------------------------------------------------------------------------ scheduling
    def run(self, points: list[Point]) -> None:
        pending = []
        for p in points:
            ex = static_exclusion(p)
            if ex is not None:
                self.writer.add(p.record(*ex))
            else:
                pending.append((p, [j["id"] for j in self.impls[p.impl].jobs_for(p)]))
        for impl in dict.fromkeys(p.impl for p, _ in pending):  # start every child now: their imports overlap
            self.children.get(impl)
        while pending:
            self._compile_phase()
            if time.monotonic() > self.budget.deadline:
                for p, _ in pending:
                    late = p.record("skipped", "deadline reached (--deadline-s) before this point started")
                    self.writer.add(self._unavailable(p) or late)
                return
            i = next((k for k, (_, ids) in enumerate(pending) if self._ready(ids)), None)
            if i is None:
                time.sleep(0.2)
                continue
            p, ids = pending.pop(i)
            self.writer.add(self.dispatch(p, next((j for j in ids if self.warm.state(j) == "failed"), None)))

    def _compile_phase(self) -> None:
        self.warm.close_if_done()
        if not self.warm.finished and time.monotonic() > self.budget.compile_deadline:
            self.warm.stop(
                f"still compiling when the compile phase ended (--compile-budget-s {self.budget.compile_s:.0f})"
            )

    def _ready(self, ids) -> bool:
        return all(self.warm.state(j) != "pending" for j in ids)

    # ------------------------------------------------------------------------------------------------ one point
    def dispatch(self, p: Point, failed_job: str | None = None) -> dict:
        """The record of `p`: measured by its implementation's child, or why not."""
        pre = self._precheck(p)
        if pre is not None:
            return pre
        child = self.children.get(p.impl)
        try:
            self._hello(p.impl, child)
        except ChildFailed as e:
            self._mark_unavailable(p.impl, f"its child process did not start: {e}")
        if p.impl in self.unavailable:  # says more than the compile job that failed for the same cause
            return self._unavailable(p)
        if failed_job is not None:
            return p.record("skipped", f"compile job {failed_job} failed: {self.warm.error(failed_job)}")
        try:
            ans = child.request({"cmd": "point", "point": asdict(p)}, self.budget.left(self.budget.point_timeout_s))
        except ChildFailed as e:
            return self._crashed(p, str(e))
        rec = ans["record"]
        self.meta_impls[p.impl]["notes"] = ans.get("notes", self.meta_impls[p.impl].get("notes"))
        if ans.get("slow"):
            self.slow[p.group] = (p.n, ans["slow"])
        if rec["status"] == "ok":
            self.measured[p.group][p.n] = rec["ms"]
        if ans.get("context_lost"):
            return self._crashed(p, ans["context_lost"], rec)
        return rec

    def _unavailable(self, p: Point) -> dict | None:
        if p.impl in self.unavailable:
            return p.record("skipped", "unavailable: " + self.unavailable[p.impl])
        return None

    def _precheck(self, p: Point) -> dict | None:
        """The record of a point that is not sent to a child, or None."""
        if p.impl in self.unavailable:
            return self._unavailable(p)
        if len(self.crashes[p.impl]) >= MAX_CRASHES:
            return p.record("skipped", f"not run: {p.impl} crashed its process {MAX_CRASHES} times in this run")
        if (p.impl, p.n) in self.crashed_at:
            return p.record("skipped", self.crashed_at[(p.impl, p.n)])
        if p.direction == "forward_backward_graph" and self.device.type != "cuda":
            return p.record("skipped", "CUDA graphs need a CUDA device")
        if p.group in self.slow and p.n > self.slow[p.group][0]:
            return p.record("skipped", self.slow[p.group][1])
        pred = predicted_ms(p, self.measured)
        if pred is not None and pred > self.budget.max_call_ms:
            reason = (
                f"predicted {pred:.0f} ms per call from its group, over --max-call-ms {self.budget.max_call_ms:.0f}"
            )
            return p.record("skipped", reason)
        return None

    def _hello(self, impl: str, child: ChildProc) -> None:
        hello = child.wait_hello(self.budget.left(self.budget.hello_timeout_s))
        avail = hello["hello"]
        self.meta_impls[impl].update(avail, notes=hello.get("notes") or self.meta_impls[impl].get("notes"))
        if not avail["available"]:
            self._mark_unavailable(impl, str(avail["reason"]))

    def _mark_unavailable(self, impl: str, reason: str) -> None:
        self.unavailable[impl] = reason
        self.meta_impls[impl].update(available=False, reason=reason)
        self.children.drop(impl)

    def _crashed(self, p: Point, reason: str, rec: dict | None = None) -> dict:
        """The child of `p.impl` is gone (or its CUDA context is): record `p` as an error with `reason`, skip the
        implementation's other points at this N (the same crash is likely), and start a fresh child for the rest."""
        self.crashes[p.impl].append(reason)
        where = f"{p.direction} {lset_label(p.ls)} {p.dtype} N={p.n}"
        self.crashed_at[(p.impl, p.n)] = (
            f"not run: {p.impl} crashed its process at {where}, so its other points at N={p.n} were not attempted"
        )
        self.children.drop(p.impl)
        if len(self.crashes[p.impl]) < MAX_CRASHES:
            self.children.get(p.impl)  # start now, so its imports overlap the other implementations' points
        self.meta_impls[p.impl].setdefault("crashes", []).append({"point": where, "reason": reason})
        self.writer.flush(force=True)
        if rec is None:
            rec = p.record("error", reason)
        else:
            rec.update(status="error", reason=reason)
        return rec

    # ------------------------------------------------------------------------------------------------ launches
    def count_launches(self, lsets) -> list[dict]:
        """GPU kernels per call of our ops (measured by our child, within the hard end of the run)."""
        if OURS not in self.impls or self.device.type != "cuda" or OURS in self.unavailable:
            return []
        if len(self.crashes[OURS]) >= MAX_CRASHES:
            return []
        seconds = self.budget.hard_end - time.monotonic() - 2
        if seconds < 5:
            return [{"error": "no time left for counting launches"}]
        try:
            child = self.children.get(OURS)
            child.wait_hello(self.budget.left(self.budget.hello_timeout_s))
            req = {"cmd": "launches", "lsets": [list(ls) for ls in lsets], "seconds": seconds}
            return child.request(req, self.budget.left(seconds + 5))["launches"]
        except ChildFailed as e:
            self.children.drop(OURS)
            return [{"error": str(e)[:500]}]
