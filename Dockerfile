# CAP's image: python -m server on Python 3.11, for a GPU host with the NVIDIA
# container toolkit (docker run --gpus all), and for the CPU too.
#
# A slim Python image is enough: torch's wheels from PyPI bundle the CUDA
# runtime, cuDNN and cuBLAS (the nvidia-* packages torch depends on), so the
# image needs no CUDA base; the host needs only its NVIDIA driver (recent
# enough for torch 2.14's CUDA 13 build). See docs/deploying.md.
FROM python:3.11-slim-bookworm

# tini: a tiny init as PID 1 that hands SIGTERM to the server and reaps zombies.
# libtcmalloc-minimal4: preloaded below; SAM runs 2-5x faster on the CPU with it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 libtcmalloc-minimal4=2.10-1 \
    && rm -rf /var/lib/apt/lists/* \
    && test -f /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
ENV LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# torch first, as scripts/common.sh does, so that no loose "torch"
# requirement of another package pulls a different build.
# By default torch comes from PyPI: its CUDA 13.0 build, for GPUs from sm_75
# (Turing) on and an NVIDIA driver 580 or newer. For an older driver or GPU,
# build against one of PyTorch's own wheel indexes that carries the pinned torch
# and torchvision, e.g. CUDA 12.6 (driver 525.60 or newer):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t cap .
# Only torch's step uses it; the other packages still come from PyPI.
ARG TORCH_INDEX_URL=https://pypi.org/simple
# sam2 (SAM 2.1) builds from source against that torch, without its CUDA
# extension and without an isolated build (which would fetch another torch):
# requirements/build.txt holds the setuptools it needs.
COPY requirements/torch.txt requirements/build.txt requirements/runtime.txt requirements/
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" -r requirements/torch.txt \
    && pip install --no-cache-dir -r requirements/build.txt \
    && SAM2_BUILD_CUDA=0 pip install --no-cache-dir --no-build-isolation -r requirements/runtime.txt

# A user of its own, not root. Host folders mounted on /app/data and
# /checkpoints must be writable by uid 10001 (README shows how).
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin cap \
    && install -d -o cap -g cap /app/data /checkpoints
COPY server/ server/
USER 10001:10001

# The checkpoint comes from a volume mounted on /checkpoints (recommended), or
# is baked into the image at build time:
#   docker build --build-arg BAKE_CHECKPOINT=true -t cap .
# For another model type, set SAM_MODEL_TYPE and SAM_CHECKPOINT too, as
# build arguments (baked) or with docker run -e (volume).
ARG SAM_MODEL_TYPE=vit_h
ARG SAM_CHECKPOINT=/checkpoints/sam_vit_h_4b8939.pth
ARG BAKE_CHECKPOINT=false
ENV SAM_MODEL_TYPE=${SAM_MODEL_TYPE} \
    SAM_CHECKPOINT=${SAM_CHECKPOINT}
RUN if [ "$BAKE_CHECKPOINT" = true ]; then python -m server download-checkpoint; fi

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "server"]
