# tf_alexnet images. Targets:
#   train      TensorFlow (CPU) + tf-alexnet: trains and exports (the compose `trainer`)
#   train-gpu  the same with tensorflow[and-cuda] (NVIDIA driver + container toolkit on the host)
#   api        the FastAPI facade without TensorFlow: talks to TF Serving over REST
#   tfserving-standin  tests only: the project's TF Serving stand-in (serving/tfserving_standin/)
#              for engines that cannot pull tensorflow/serving (scripts/compose_smoke.py)
# docker compose builds them (docker-compose.yml); by hand: DOCKER_BUILDKIT=1 docker build
# --target api . (BuildKit: the RUN --mount and COPY --chmod lines need it).
#
# No `# syntax=` line: it makes BuildKit pull a frontend image from Docker Hub, which fails on
# an engine without registry access. The engine's built-in frontend (Docker 20.10+) handles
# every instruction here.
#
# Every Python package is pinned in docker/requirements-*.txt
# (scripts/lock_docker_requirements.py). The base image is pinned by tag; pin its digest too
# for byte-identical rebuilds (docs/docker.md says how). Without Docker Hub, pass any Debian
# bookworm image with python3.11 and its venv module as `--build-arg PYTHON_IMAGE=...`
# (scripts/compose_smoke.py builds one with debootstrap).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- base: a virtualenv and an unprivileged user ----------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app
WORKDIR /home/app

# --- wheel: builds tf-alexnet once, for every target -----------------------------------------
FROM base AS wheel
COPY docker/requirements-build.txt /tmp/requirements-build.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements-build.txt
COPY pyproject.toml setup.py README.md /src/
COPY tf_alexnet /src/tf_alexnet
COPY serving /src/serving
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

# --- train: TensorFlow + tf-alexnet -----------------------------------------------------------
FROM base AS train
COPY docker/requirements-train.txt /tmp/requirements-train.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements-train.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps --no-cache-dir /wheels/tf_alexnet-*.whl
COPY --chmod=755 docker/train-and-export.sh /usr/local/bin/train-and-export
# Mount points, owned by `app` so that new named volumes mounted here are too.
RUN mkdir -p /models /runs /data/tfds /data/manual /data/images \
    && chown -R app:app /models /runs /data
ENV TF_ALEXNET_DATA_DIR=/data/tfds \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
CMD ["train-and-export"]

# --- train-gpu: the same with CUDA from pip (tensorflow[and-cuda]) ---------------------------
FROM train AS train-gpu
USER 0
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c /tmp/requirements-train.txt "tensorflow[and-cuda]==2.21.0"
USER 10001:10001

# --- tfserving-standin: TF Serving's REST/gRPC protocol over the same volume (tests only) ------
# `tensorflow_model_server` here takes the official server's flags (docker-compose.yml's
# command) and serves the model with the project's stand-in; batching, warmup and monitoring
# flags are accepted and ignored. bash (for the compose healthcheck) is the base image's.
FROM train AS tfserving-standin
USER 0
COPY docker/requirements-api.txt /tmp/requirements-api.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c /tmp/requirements-api.txt starlette uvicorn
COPY serving/tfserving_standin /opt/tfserving-standin/tfserving_standin
COPY --chmod=755 docker/tensorflow_model_server.sh /usr/local/bin/tensorflow_model_server
ENV PYTHONPATH=/opt/tfserving-standin
USER 10001:10001
EXPOSE 8500 8501
ENTRYPOINT ["tensorflow_model_server"]

# --- api: the facade, REST client only (no TensorFlow: ~130 MB of packages, not 2.5 GB) ------
FROM base AS api
COPY docker/requirements-api.txt /tmp/requirements-api.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements-api.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps --no-cache-dir /wheels/tf_alexnet-*.whl
ENV TF_ALEXNET_SERVE_BACKEND=tfserving-rest
USER 10001:10001
EXPOSE 8000
# Healthy means "can answer /predict": /readyz asks TF Serving whether the model is AVAILABLE.
# The slim image has no curl; Python's urllib does the request.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["tf-alexnet", "serve", "--host", "0.0.0.0", "--port", "8000"]
