"""Shared ``--quick`` handling for the example scripts (also ``EQUITRITON_EXAMPLES_QUICK=1``)."""

from __future__ import annotations

import argparse
import os

QUICK_ENV = "EQUITRITON_EXAMPLES_QUICK"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (short mode, for tests and smoke runs) and ``--device``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get(QUICK_ENV, "") not in ("", "0"),
        help=f"short mode (a few seconds; also set by {QUICK_ENV}=1)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or xpu (default: auto)")
    return p
