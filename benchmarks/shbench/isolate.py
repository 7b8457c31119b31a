"""Parent side of the per-implementation child processes (child.py is the other side).

`ChildProc` starts `python -m shbench.child` for one implementation, in its own session (so its whole process
group, Inductor's compile workers included, can be killed), with its stderr in a log file. `request()` sends one
JSON line and waits for one answer, at most `timeout` seconds; a child that dies, closes its pipe or does not answer
in time raises `ChildFailed`, whose text says how it ended and quotes the error lines of its stderr (e.g. "CUDA
error: an illegal memory access was encountered"). The caller records that on the point in flight.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .child import PARENT_ENV

BENCH = Path(__file__).resolve().parents[1]  # benchmarks/
REPO = BENCH.parent


class ChildFailed(Exception):
    """The child died, closed its pipe or timed out; str(e) is the reason recorded on the point."""


class ChildProc:
    def __init__(self, impl: str, cfg: dict, log_dir: Path, index: int, extra_env: dict | None = None) -> None:
        self.impl, self.cfg = impl, {**cfg, "impl": impl}
        self.log = log_dir / f"{impl}.{index}.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self.hello: dict | None = None

    # -------------------------------------------------------------------------------------------- life cycle
    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
        env[PARENT_ENV] = str(os.getpid())
        for k, v in self.extra_env.items():
            env[k] = v + (os.pathsep + env[k] if k.endswith("PATH") and env.get(k) else "")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shbench.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=str(REPO),
                start_new_session=True,
            )
        self._write(self.cfg)

    def wait_hello(self, timeout: float) -> dict:
        """The child's first answer: {'hello': availability, 'notes': ..., 'pid': ...} (imports take seconds)."""
        if self.hello is None:
            self.hello = self._read(timeout, "starting")
        return self.hello

    def request(self, obj: dict, timeout: float) -> dict:
        self._write(obj)
        return self._read(timeout, "answering")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self, grace_s: float = 5.0) -> None:
        """Ask the child to exit; kill its process group if it has not within `grace_s`."""
        if not self.alive():
            return
        try:
            self._write({"cmd": "exit"})
            self.proc.wait(timeout=grace_s)
        except (ChildFailed, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    # -------------------------------------------------------------------------------------------------- I/O
    def _write(self, obj: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise ChildFailed(self._ended("could not be written to")) from None

    def _read(self, timeout: float, doing: str) -> dict:
        """One JSON line from the child, unbuffered (select + os.read), so a hung child cannot block past `timeout`."""
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + max(timeout, 0.0)
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                self.kill()
                raise ChildFailed(f"the child process gave no answer within {timeout:.0f} s ({doing}) and was killed")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise ChildFailed(self._ended(f"died while {doing}"))
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self.kill()
            raise ChildFailed(self._ended(f"sent a broken answer while {doing}")) from None

    def _ended(self, what: str) -> str:
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            how = "still running"
        elif rc < 0:
            how = f"killed by {signal.Signals(-rc).name}"
        else:
            how = f"exit status {rc}"
        return f"the child process {what} ({how}); its stderr: {stderr_gist(self.log)}"


def stderr_gist(log: Path, keep: int = 8, limit: int = 1500) -> str:
    """The error lines at the end of a child's stderr, verbatim (C++ stack frames dropped), joined by ' ⏎ '."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()[-300:]
    except OSError:
        return "(no log)"
    lines = [ln.rstrip() for ln in lines if ln.strip() and not re.match(r"\s*(frame #\d+|Exception raised from)", ln)]
    key = [ln for ln in lines if re.search(r"error|what\(\)|terminate|fault|abort|killed|Traceback", ln, re.I)]
    picked = (key or lines)[-keep:]
    return (" ⏎ ".join(picked) or "(empty)")[-limit:]


def nvrtc12_shim(folder: Path) -> tuple[dict, str]:
    """sphericart-torch's CUDA-stream library lists libnvrtc.so.12 as NEEDED but calls none of its symbols (its kernels
    are compiled through whichever of libnvrtc.so{,.11..15} it dlopen()s), and a CUDA-13 machine has no such file.
    Where none is on the search path, link libnvrtc.so.12 to the libnvrtc that is there, for the sphericart child only.
    Returns (extra environment for that child, a note for the JSON)."""
    found = _nvrtc_candidates()
    if not found:
        return {}, "no libnvrtc found to stand in for libnvrtc.so.12"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "libnvrtc.so.12"
    if not os.path.lexists(link):
        os.symlink(found[0], link)
    return {"LD_LIBRARY_PATH": str(folder)}, f"libnvrtc.so.12 (its NEEDED entry) -> {found[0]}"


def _nvrtc_candidates() -> list[str]:
    """libnvrtc files on this machine, a CUDA-12 one first, then the newest."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    try:
        import nvidia  # the CUDA wheels torch loads

        dirs += [d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "**", "lib"), recursive=True)]
    except ImportError:
        pass
    dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]
    files = [f for d in dirs for f in glob.glob(os.path.join(d, "libnvrtc.so.1[1-9]*")) if "builtins" not in f]

    def rank(f: str):
        major = int(re.search(r"\.so\.(\d+)", f).group(1))
        return (major != 12, -major, len(f))

    return sorted(dict.fromkeys(os.path.realpath(f) for f in files), key=rank)
