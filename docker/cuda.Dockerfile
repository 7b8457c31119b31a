# EquiTriton-MD on NVIDIA GPUs: PyTorch + CUDA base image, package installed with the md and dev
# extras, test suite as the default command.
#
#   docker build -f docker/cuda.Dockerfile -t equitriton-md:cuda .
#   docker run --rm --gpus all equitriton-md:cuda                      # full test suite (CUDA tests included)
#   docker run --rm --gpus all -v "$PWD/out:/out" equitriton-md:cuda \
#       equitriton-md nve --compare --device cuda --out /out/nve       # a stability run
#
# Build context: the repository root. See docs/docker.md for what has and has not been run.
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.9-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Triton compiles a small C launcher at run time, so it needs a C compiler; the runtime image has none.
# Distribution packages are left unpinned on purpose: the base image fixes the Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg

WORKDIR /opt/equitriton-md
COPY . .

# torch (with its matching triton) comes from the base image; pip keeps it because it satisfies the
# requirements. The md extra brings ASE, NequIP, Allegro, vesin, matplotlib and tqdm; dev brings pytest and
# hadolint; vesin-torch enables the on-device force step (`equitriton-md nve --fast-step`).
# docker/constraints.txt pins the other dependencies to the versions the tests were run with.
RUN python -m pip install --constraint docker/constraints.txt ".[md,dev]" vesin-torch \
    && python -c "import torch, triton, equitriton, md_plugin; print('torch', torch.__version__, 'triton', triton.__version__)"

# fail the container (not only print) if the GPU is not visible, so a missing --gpus flag is noticed
ENV EQUITRITON_REQUIRE_DEVICE=cuda
CMD ["python", "-m", "pytest", "-q", "-rs", "tests"]
