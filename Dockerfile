# Worker image: `tuner run` plus optuna-dashboard.
#
# torch comes from the PyTorch wheel index named by TORCH_INDEX:
#   CPU (default, ~1 GB image):  docker build -t tuner-worker .
#   CUDA (driver >= the CUDA version on the host, NVIDIA Container Toolkit to run):
#     docker build -t tuner-worker:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
# The CUDA wheels bring their own CUDA libraries, so the slim Python base works for both.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# torch first, from its own index, so that the project install finds it already satisfied.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md ./
COPY tuner ./tuner
RUN pip install ".[dashboard]"
COPY studies ./studies

RUN useradd --create-home --uid 10001 tuner && chown tuner /app
USER tuner

CMD ["tuner", "--help"]
