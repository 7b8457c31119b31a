"""The process that measures one implementation (started by isolate.ChildProc as `python -m shbench.child`).

A peer's kernel can break the CUDA context (an illegal memory access poisons the whole process) or kill the process
outright, so every implementation is measured in its own child: whatever happens there, the parent records it on the
point in flight and goes on. Protocol, one JSON object per line: the parent writes the config, the child answers
{"hello": availability}; then each request {"cmd": "point" | "launches" | "exit", ...} gets one answer.
The answers go to the original stdout; fd 1 is pointed at stderr (the child's log) so nothing a library prints can
corrupt the protocol.

SH_BENCH_TEST_CRASH="<impl>[@<n>]:<abort|exit|hang>" makes this child crash (os.abort), exit (os._exit(3)) or hang
instead of measuring that implementation's points (at N = n only, if given): a test hook for the crash handling,
inactive unless the variable is set.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

CRASH_ENV = "SH_BENCH_TEST_CRASH"
PARENT_ENV = "SH_BENCH_PARENT_PID"


def _die_with_parent() -> None:
    """Linux: SIGKILL this child if the parent dies (a `timeout` kill must not leave it running on the GPU)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != int(os.environ.get(PARENT_ENV, os.getppid())):  # the parent died before prctl
        os._exit(1)


def _test_crash(impl: str, n: int) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    target, _, mode = spec.partition(":")
    name, _, at = target.partition("@")
    if name != impl or (at and int(at) != n):
        return
    print(f"{CRASH_ENV}: {mode} at {impl} N={n}", file=sys.stderr, flush=True)
    if mode == "abort":
        os.abort()
    if mode == "exit":
        os._exit(3)
    if mode == "hang":
        time.sleep(10**6)


def main() -> None:
    _die_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(obj) -> None:
        proto.write(json.dumps(obj, default=str) + "\n")
        proto.flush()

    cfg = json.loads(sys.stdin.readline())
    import torch

    from . import peers
    from .measure import Limits, Measurer, count_launches
    from .points import Point

    impl = peers.load([cfg["impl"]], _path(cfg["peers_dir"]), _path(cfg["cache_dir"]))[cfg["impl"]]
    device = torch.device(cfg["device"])
    avail = impl.availability(device)
    if avail["available"] and cfg["impl"] == "e3nn_compile":
        peers.E3nnCompile.configure()
    send({"hello": avail, "notes": impl.notes, "pid": os.getpid()})
    measurer = Measurer(impl, device, Limits(**cfg["limits"]), cfg["copy_gbps"], cfg["l2"])
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "exit":
            break
        if req["cmd"] == "launches":
            deadline = time.monotonic() + req["seconds"]
            send({"launches": count_launches(impl, device, req["lsets"], deadline)})
        elif req["cmd"] == "point":
            p = Point(**{**req["point"], "ls": tuple(req["point"]["ls"])})
            _test_crash(p.impl, p.n)
            out = measurer.run_point(p)
            send({"record": out.record, "slow": out.slow, "context_lost": out.context_lost, "notes": impl.notes})
            if out.context_lost:
                break  # nothing more can run in this process; the parent starts a fresh one


def _path(v) -> Path | None:
    return Path(v) if v else None


if __name__ == "__main__":
    main()
