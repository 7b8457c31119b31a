"""The compile phase: worker processes compile what the timed points will need, in parallel, into the on-disk caches
(Triton's kernel cache, Inductor's FX-graph and AOT-autograd caches, cuequivariance descriptor pickles), so the
timing process only loads them. Jobs run longest-first; at the compile budget the pool is terminated and the
unfinished jobs are reported, and the points that needed them are recorded as skipped with that reason.
A worker whose job broke its CUDA context reports the failure and exits (the pool starts a fresh worker); a job whose
worker died without reporting is failed as soon as the parent notices the worker is gone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

_IMPLS: dict = {}
_QUEUE = None  # worker side: ("start", job id, pid) as a job starts, ("done", result) when its worker must exit

# each worker compiles single-threaded: the parallelism is across workers
WORKER_ENV = {"TORCHINDUCTOR_COMPILE_THREADS": "1", "OMP_NUM_THREADS": "1"}


@contextmanager
def env_overrides(extra: dict):
    """os.environ with `extra` set for the block, then as it was (keys that were unset are removed again)."""
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init(names, peers_dir, cache_dir, queue) -> None:
    global _QUEUE
    from . import peers
    from .child import _die_with_parent

    _die_with_parent()
    _IMPLS.update(peers.load(names, peers_dir, cache_dir))
    _QUEUE = queue


def _run(job: dict) -> tuple[str, bool, str | None, float]:
    t0 = time.monotonic()
    _QUEUE.put(("start", job["id"], os.getpid()))
    cuda = torch.cuda.is_available()
    try:
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        _IMPLS[job["impl"]].warm(job, device)
        if cuda:
            torch.cuda.synchronize(device)
        return job["id"], True, None, time.monotonic() - t0
    except BaseException as e:  # reported to the parent, which records it on the points that need this job
        result = job["id"], False, f"{type(e).__name__}: {e}"[:500], time.monotonic() - t0
        if cuda and not _cuda_usable():
            # every later job of this worker would fail too: report through the queue, then make the pool replace it
            _QUEUE.put(("done", result))
            _QUEUE.close()
            _QUEUE.join_thread()
            os._exit(70)
        return result


def _cuda_usable() -> bool:
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
        return True
    except Exception:
        return False


class WarmPool:
    """Runs jobs in `workers` spawned processes.

    `state(id)`: 'done'; 'failed' (it raised, or it was still running when the pool was stopped: too slow to compile
    within the run); 'pending'; or 'cold' (the pool was stopped before the job started: what it compiles is compiled
    by the implementation's child process when a point first needs it).
    """

    def __init__(self, jobs: list[dict], workers: int, impl_names, peers_dir: Path | None, cache_dir: Path | None):
        self.jobs = {j["id"]: j for j in jobs}
        self.results: dict[str, dict] = {}
        self.workers = workers
        self._args = (list(impl_names), peers_dir, cache_dir)
        self._pool = None
        self._queue = None
        self._begun: dict[str, int] = {}  # job id -> pid of the worker that started it
        self.started = self.stopped = None

    def start(self) -> None:
        self.started = time.monotonic()
        if self.workers <= 0 or not self.jobs:
            return
        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        with env_overrides(WORKER_ENV):
            self._pool = ctx.Pool(self.workers, initializer=_init, initargs=(*self._args, self._queue))
        for job in sorted(self.jobs.values(), key=lambda j: -j["cost"]):
            self._pool.apply_async(_run, (job,), callback=self._done)

    def _done(self, result) -> None:
        jid, ok, err, secs = result
        self.results[jid] = {"ok": ok, "error": err, "seconds": round(secs, 2)}

    def _drain(self) -> None:
        while self._queue is not None and self._pool is not None:
            try:
                msg = self._queue.get_nowait()
            except Exception:  # queue.Empty
                break
            if msg[0] == "start":
                self._begun[msg[1]] = msg[2]
            else:
                self._done(msg[1])
        self._reap_lost()

    def _reap_lost(self) -> None:
        """Jobs whose worker process is gone without a result (a segfault, an abort): failed, with that reason."""
        if self._pool is None:
            return
        alive = {w.pid for w in getattr(self._pool, "_pool", []) if w.is_alive()}
        for jid, pid in self._begun.items():
            if jid not in self.results and pid not in alive:
                self.results[jid] = {"ok": False, "error": f"its worker process (pid {pid}) died", "seconds": None}

    def state(self, jid: str) -> str:
        if self._pool is None and self.stopped is None:
            return "done"  # no workers: whatever a point needs compiles in the implementation's child process
        r = self.results.get(jid)
        if r is None:
            return "pending"
        if r["ok"]:
            return "done"
        return "cold" if r.get("cold") else "failed"

    def error(self, jid: str) -> str:
        r = self.results.get(jid) or {}
        return r.get("error") or "compile job did not finish"

    @property
    def finished(self) -> bool:
        return self._pool is None or len(self.results) == len(self.jobs)

    def close_if_done(self) -> None:
        """Once every job has reported, end the workers (they hold GPU memory the large points need). terminate(),
        not close() + join(): a job whose worker died never reaches the pool's result cache, and join() would wait
        for it forever."""
        self._drain()
        if self._pool is not None and len(self.results) == len(self.jobs):
            self._pool.terminate()
            self._pool.join()
            self._pool = None
            self.stopped = time.monotonic()

    def stop(self, reason: str) -> None:
        """Terminate the workers; unfinished jobs become failed with `reason`."""
        self._drain()
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        for jid in self.jobs:
            if jid in self._begun:
                self.results.setdefault(jid, {"ok": False, "error": reason, "seconds": None, "cold": False})
            else:
                note = (
                    "not started in the compile phase: compiled by the implementation's child process when first needed"
                )
                self.results.setdefault(jid, {"ok": False, "error": note, "seconds": None, "cold": True})
        self.stopped = time.monotonic()

    def summary(self) -> dict:
        """For the JSON: wall time of the phase and every job's outcome and seconds."""
        end = self.stopped or time.monotonic()
        return {
            "workers": self.workers,
            "wall_s": round(end - self.started, 1) if self.started else None,
            "jobs": [{"id": jid, **self.results.get(jid, {"ok": None})} for jid in self.jobs],
        }
