"""Prepare the git-ignored peers folder that `sh_bench.py --peers-dir` reads and the GPU call carries.

    python benchmarks/get_peers.py --equitriton-src PATH [--dest .peers] [--no-wheels]

- DEST/equitriton_orig/: the original EquiTriton package (github.com/IntelLabs/EquiTriton, src/equitriton, MIT) taken
  from PATH (a clone, or a bare or mirror git repository) at its HEAD, with `equitriton` renamed `equitriton_orig` so it
  imports beside ours. It is never committed: DEST is added to .git/info/exclude.
- DEST/wheels/: the Python 3.12 x86-64 wheels the GPU machine lacks, from PyPI with pip (no dependencies resolved:
  each needed one is named in WHEELS). Wheels over 5 MB are re-compressed with LZMA: the same files with the same
  RECORD hashes, which pip installs as usual, at a third of the size.
- DEST/MANIFEST.json: what is there, with sizes and the notes the performance docs show.

The GPU image runs torch 2.11.0+cu130, so the CUDA-13 builds of cuequivariance's ops are fetched.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = [
    "sphericart==2.0.4",
    "sphericart-torch==2.0.4",
    "cuequivariance==0.13.0",
    "cuequivariance-torch==0.13.0",
    "cuequivariance-ops-cu13==0.13.0",
    "cuequivariance-ops-torch-cu13==0.13.0",
    "platformdirs==4.14.8",  # needed by cuequivariance-ops, not on the GPU image
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64"]
PLATFORMS += ["manylinux2014_x86_64"]
RECOMPRESS_ABOVE = 5 * 2**20


def exclude(dest: Path) -> None:
    """Add /DEST/ to the repository's .git/info/exclude (once)."""
    path = Path(subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--git-path", "info/exclude"], text=True))
    path = path if path.is_absolute() else REPO / path.as_posix().strip()
    line = "/" + dest.resolve().relative_to(REPO).as_posix() + "/"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if path.exists() else []
    if line not in lines:
        path.write_text("\n".join(lines + [line]) + "\n")


def rename(text: str) -> str:
    """`equitriton` (the module name, not `equitriton_...`) -> `equitriton_orig`, in code and strings alike."""
    return re.sub(r"\bequitriton\b(?!_)", "equitriton_orig", text)


def extract_original(src: Path, dest: Path) -> dict:
    """Write dest/equitriton_orig from the git repository at `src` (HEAD); returns its manifest entry."""
    commit = subprocess.check_output(["git", "-C", str(src), "rev-parse", "HEAD"], text=True).strip()
    tar = subprocess.check_output(
        ["git", "-C", str(src), "archive", "--format=tar", "HEAD", "src/equitriton", "LICENSE"]
    )
    out = dest / "equitriton_orig"
    shutil.rmtree(out, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for m in tf.getmembers():
            if not m.isfile():
                continue
            rel = Path(m.name)
            if rel.name == "LICENSE":
                target = out / "LICENSE"
            else:
                parts = rel.relative_to("src/equitriton").parts
                if "tests" in parts:
                    continue
                target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tf.extractfile(m).read()
            target.write_bytes(rename(data.decode()).encode() if target.suffix == ".py" else data)
    (out / "SOURCE.txt").write_text(
        f"{commit} https://github.com/IntelLabs/EquiTriton src/equitriton (MIT, see LICENSE); "
        "imports renamed equitriton -> equitriton_orig by benchmarks/get_peers.py\n"
    )
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"commit": commit, "bytes": size}


def recompress(path: Path) -> None:
    """Rewrite a wheel with every member LZMA-compressed (contents and RECORD unchanged)."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as zi, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zo:
        for info in zi.infolist():
            zo.writestr(info, zi.read(info.filename), compress_type=zipfile.ZIP_LZMA)
    tmp.replace(path)


def download(specs: list[str], wheels: Path) -> list[dict]:
    wheels.mkdir(parents=True, exist_ok=True)
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    out = []
    for spec in specs:
        before = set(wheels.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", *plats, "-d", str(wheels), spec]
        subprocess.run(cmd, check=True)
        new = sorted(set(wheels.glob("*.whl")) - before) or sorted(wheels.glob(_glob(spec)))
        for w in new:
            entry = {"spec": spec, "wheel": w.name, "published_bytes": w.stat().st_size}
            if w.stat().st_size > RECOMPRESS_ABOVE:
                recompress(w)
                entry["lzma"] = True
            entry["bytes"] = w.stat().st_size
            out.append(entry)
    return out


def _glob(spec: str) -> str:
    name, _, version = spec.partition("==")
    return f"{name.replace('-', '_')}-{version or '*'}-*.whl"


def notes(orig: dict | None, wheels: list[dict]) -> list[str]:
    mb = {w["spec"].split("==")[0]: w for w in wheels}
    out = []
    if orig:
        out.append(
            f"original EquiTriton: IntelLabs/EquiTriton at {orig['commit'][:12]}, src/equitriton (MIT), "
            f"{orig['bytes'] / 1e6:.1f} MB, imports renamed to equitriton_orig; not committed"
        )
    if "sphericart-torch" in mb:
        out.append(
            "sphericart-torch: a binary wheel (py3-none-manylinux) with prebuilt libraries for torch 2.6-2.14, so no "
            "build is needed; its CUDA code is compiled at run time with NVRTC, which it loads as libnvrtc.so "
            "(device_setup.sh links the unversioned names)"
        )
    ops = [mb[k] for k in ("cuequivariance-ops-cu13", "cuequivariance-ops-torch-cu13") if k in mb]
    if ops:
        pub = sum(w["published_bytes"] for w in ops) / 1e6
        now = sum(w["bytes"] for w in ops) / 1e6
        out.append(
            f"cuequivariance CUDA ops for CUDA 13 (the GPU image has torch 2.11.0+cu130): the two wheels are "
            f"{pub:.1f} MB as published, over the 64 MiB one device call can carry; re-compressed with LZMA "
            f"(same files, same RECORD hashes) they are {now:.1f} MB. The cu12 builds need the CUDA 12 runtime and "
            "cuBLAS 12, which that image lacks"
        )
    total = sum(w["bytes"] for w in wheels) / 1e6
    if wheels:
        out.append(f"wheels carried: {len(wheels)}, {total:.1f} MB in all")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--equitriton-src", type=Path, help="clone or git mirror of IntelLabs/EquiTriton")
    ap.add_argument("--dest", type=Path, default=REPO / ".peers")
    ap.add_argument("--no-wheels", action="store_true")
    args = ap.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    exclude(args.dest)
    manifest_path = args.dest / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if args.equitriton_src:
        manifest["equitriton_orig"] = extract_original(args.equitriton_src, args.dest)
    if not args.no_wheels:
        shutil.rmtree(args.dest / "wheels", ignore_errors=True)
        manifest["wheels"] = download(WHEELS, args.dest / "wheels")
    manifest["notes"] = notes(manifest.get("equitriton_orig"), manifest.get("wheels", []))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print("\n".join(manifest["notes"]))
    print(f"{args.dest}: {total / 2**20:.1f} MiB; carry it with the device call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
