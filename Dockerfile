# Worker image: `tuner run` plus optuna-dashboard.
#
# torch comes from the PyTorch wheel index named by TORCH_INDEX:
#   CPU (default, ~1 GB image):  docker build -t tuner-worker:0.1.0 .
#   CUDA (driver >= the CUDA version on the host, NVIDIA Container Toolkit to run):
#     docker build -t tuner-worker:0.1.0-cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
# The CUDA wheels bring their own CUDA libraries, so the slim Python base works for both.
# Tag images with tuner's version (pyproject.toml), never :latest: every worker then runs one
# build. Every Python package is pinned by deploy/constraints.txt (python deploy/lock.py writes it),
# and the base image by its exact tag, so images built on different days are the same software.
FROM python:3.11.7-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUNER_DATA_DIR=/data/datasets \
    TUNER_CACHE_DIR=/data/cache

WORKDIR /app
COPY deploy/constraints.txt ./constraints.txt
# torch first, from its own index, so that the project install finds it already satisfied.
RUN pip install --index-url "${TORCH_INDEX}" -c constraints.txt torch torchvision

COPY pyproject.toml README.md ./
COPY studies ./studies
COPY tuner ./tuner
# The study files ship inside the package (tuner/studies links to studies/), so `tuner run
# --study NAME` finds them from any working directory.
RUN pip install -c constraints.txt ".[dashboard]"

RUN useradd --create-home --uid 10001 tuner && chown tuner /app \
    && mkdir -p /data/datasets /data/cache && chown -R tuner /data
USER tuner
VOLUME ["/data"]

CMD ["tuner", "--help"]
