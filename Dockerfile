# dlas: the same install as `make setup`, in an image.
#   docker build -t dlas .
#   docker run --rm -v "$PWD/mlruns:/work/mlruns" -v "$PWD/.cache:/work/.cache" dlas
#   docker run --rm -p 5000:5000 -v "$PWD/mlruns:/work/mlruns" dlas \
#       mlflow ui --host 0.0.0.0 --backend-store-uri sqlite:///mlruns/mlflow.db
# For a CPU-only image, point pip at PyTorch's CPU wheel index:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index> -t dlas .
FROM python:3.11-slim-bookworm

ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# g++ links the compiled libraries; the aarch64 cross toolchain builds for Arm boards over RPC;
# PostgreSQL and Chromium are what `make setup` adds for the scale-out and browser tests.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make git g++-aarch64-linux-gnu \
      postgresql chromium \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dlas
COPY pyproject.toml setup.py README.md ./
COPY dlas ./dlas
COPY conf ./conf
COPY hydra_plugins ./hydra_plugins
RUN python -m pip install --upgrade pip && python -m pip install -e ".[dev,onnx,scaleout]"

COPY tests ./tests
COPY benchmarks ./benchmarks
COPY experiments ./experiments

# Runs, caches and outputs land in /work (mount it to keep them).
WORKDIR /work
CMD ["python", "-m", "dlas.run"]
