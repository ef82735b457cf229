# baihua on CPU: `docker build -t baihua . && docker run -p 8000:8000 -v baihua-data:/data baihua`
# torch is pinned to 2.13.0 in pyproject.toml; the CPU wheel index keeps the image free of CUDA.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    BAIHUA_CACHE_DIR=/cache \
    BAIHUA_DATA_DIR=/data \
    BAIHUA_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY encoder encoder
COPY whitening whitening
COPY index index
COPY app app
COPY eval eval
COPY configs configs
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[milvus]" \
 && baihua models prepare

VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["baihua", "serve"]
