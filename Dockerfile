# vidmem: one image for every process; the command picks the role (`vidmem serve`, `vidmem ingest`,
# `vidmem worker --queues ingest|encode|answer`). The API and ingest processes do not use torch, but
# share the image (and its torch layer) with the workers: one build, one tag to roll out.
#
#   CPU image (default):  docker build -t vidmem:cpu .
#   GPU image:            docker build -t vidmem:cuda \
#                           --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 .
#
# TORCH_INDEX_URL is the PyTorch wheel index that torch==2.13.0 (the pin in pyproject.toml) is
# installed from. The default, .../whl/cpu, gives the small CPU-only build. For a GPU image, pass
# a CUDA index, .../whl/cu<XYZ>: pick a CUDA tag that PyTorch publishes for 2.13.0 (see
# https://pytorch.org/get-started/previous-versions/) and that the host's NVIDIA driver supports.
# The CUDA runtime ships inside the wheels: the host needs only the driver and the NVIDIA
# Container Toolkit. Plain legacy `docker build` (no BuildKit) is enough.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# HF_HOME: Hugging Face hub downloads; VIDMEM_MODEL_CACHE: built presets (tiny, random-*).
# Both live under /cache, which compose mounts as a volume. VIDMEM_UPLOAD_DIR is shared by the
# API (which saves uploads) and the ingest workers (which decode them).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HOME=/cache/huggingface \
    VIDMEM_MODEL_CACHE=/cache/vidmem \
    VIDMEM_UPLOAD_DIR=/data/uploads

WORKDIR /app

# 1. torch alone, from the chosen index: the largest layer, and the only one that differs
#    between the CPU and GPU images.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

# 2. The other dependencies, read from pyproject.toml, so this layer is rebuilt only when the
#    dependency list changes. The installed 2.13.0+cpu / +cuXYZ build satisfies "torch==2.13.0".
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 3. vidmem itself (everything it needs is installed above).
COPY . .
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info

# A non-root user. The volume mount points belong to it, so named volumes mounted there
# start out writable by it.
RUN groupadd --gid 10001 vidmem \
 && useradd --uid 10001 --gid vidmem --create-home --shell /usr/sbin/nologin vidmem \
 && mkdir -p /cache/huggingface /cache/vidmem /data/uploads \
 && chown -R vidmem:vidmem /cache /data
USER vidmem

EXPOSE 8000
CMD ["vidmem", "serve", "--host", "0.0.0.0"]
