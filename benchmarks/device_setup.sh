# Source this on the GPU machine before benchmarks/sh_bench.py (it exports variables, so source it, don't run it):
#
#     . benchmarks/device_setup.sh [PEERS_DIR]      # PEERS_DIR defaults to .peers (made by benchmarks/get_peers.py)
#
# Installs the wheels carried in PEERS_DIR/wheels into /tmp/site (pip, no index, no dependencies), puts /tmp/site on
# PYTHONPATH, and links the CUDA libraries the peers look for by name (sphericart dlopen()s libcudart.so, libnvrtc.so,
# libcuda.so; cuequivariance's ops need libnvrtc.so.13 and libcublas.so.13 without an RPATH) in /tmp/site/_cuda_libs,
# which it puts first on LD_LIBRARY_PATH.
# Nothing here stops the shell on failure: a peer that cannot be set up is reported by sh_bench.py as unavailable.

_peers="${1:-.peers}"
_site=/tmp/site
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "device_setup.sh: run with bash, the exports will not reach python; use: . benchmarks/device_setup.sh" >&2
fi
if ls "$_peers"/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$_site" \
    "$_peers"/wheels/*.whl || echo "device_setup.sh: pip install of $_peers/wheels failed" >&2
else
  echo "device_setup.sh: no wheels in $_peers/wheels (peers needing them will be reported unavailable)" >&2
fi
export PYTHONPATH="$_site${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$_site/_cuda_libs"
python3 - "$_site/_cuda_libs" <<'PY' || echo "device_setup.sh: could not link CUDA libraries" >&2
# Link each wanted name to a library the machine has, preferring the CUDA wheels torch itself loads, so the peers
# and torch share one copy: unversioned names for sphericart's dlopen(); CUDA-13 sonames that cuequivariance's ops
# need (they have no RPATH).
import glob, os, subprocess, sys

out = sys.argv[1]
roots = []
try:
    import nvidia  # the CUDA wheels torch depends on

    roots += [d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "**", "lib"), recursive=True)]
except ImportError:
    pass
roots += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/nvidia/lib64",
          "/usr/lib/x86_64-linux-gnu", "/usr/lib64"]
ldcache = [line.split("=>")[-1].strip() for line in subprocess.run(["ldconfig", "-p"], capture_output=True,
           text=True).stdout.splitlines() if "=>" in line]
for name in ("libcudart.so", "libnvrtc.so", "libcuda.so", "libnvrtc.so.13", "libcublas.so.13", "libcublasLt.so.13"):
    stem = name.split(".so")[0]

    def fits(f):
        b = os.path.basename(f)
        return b.split(".so")[0] == stem and (b == name or b.startswith(name + ".") or name.endswith(".so"))

    found = [f for r in roots for f in sorted(glob.glob(os.path.join(r, stem + ".so*"))) if fits(f)]
    found += [f for f in ldcache if fits(f)]
    link = os.path.join(out, name)
    if found and not os.path.lexists(link):
        os.symlink(found[0], link)
    print(f"device_setup.sh: {name} -> {found[0] if found else 'NOT FOUND'}")
PY
export LD_LIBRARY_PATH="$_site/_cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Inductor builds AOTInductor wrapper .so files with $CXX. The lent H200 sets CXX=/opt/gcc/bin/g++, whose .so files
# carry their own libstdc++ code and segfault in std::regex at load, for any model; the system g++ works there
# (docs/md_performance_notes.md, "AOTInductor on CUDA").
if [ -n "${CXX:-}" ] && [ "$CXX" != /usr/bin/g++ ] && [ -x /usr/bin/g++ ]; then
  echo "device_setup.sh: CXX=$CXX -> /usr/bin/g++ (AOTInductor wrapper libraries)"
  export CXX=/usr/bin/g++
fi
unset _peers _site
