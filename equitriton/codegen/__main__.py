"""`python -m equitriton.codegen [--check]`: write (or check) the generated modules in equitriton/generated/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .render import render_torch, render_triton

GENERATED = Path(__file__).resolve().parent.parent / "generated"
FILES = {"triton_kernels.py": render_triton, "torch_fallback.py": render_torch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ from the generator")
    args = parser.parse_args(argv)
    stale = []
    for name, render in FILES.items():
        text = render()
        path = GENERATED / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path} ({len(text.splitlines())} lines)")
    if stale:
        print(f"stale generated files: {stale}; run `python -m equitriton.codegen`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
