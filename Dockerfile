# HunyuanVideo (rebuilt) on CUDA: the package with its [demo], [web] and [parallel] extras, at the
# versions CI tests (.ci/constraints.txt), on the base image's torch 2.5.1 (the floor is 2.4).
#   docker build -t hyvideo .
#   docker run --gpus all -v $PWD/ckpts:/app/ckpts -v $PWD/results:/app/results hyvideo \
#       hyvideo-sample --prompt "A cat walks on the grass, realistic style."
#   docker run --rm hyvideo hyvideo-sample --model tiny-random --prompt "a cat"   # offline demo
#   docker run --gpus all -p 7860:7860 -v $PWD/ckpts:/app/ckpts hyvideo hyvideo-web --server-name 0.0.0.0
# flash-attn (optional) from a prebuilt wheel for this image (CUDA 12, torch 2.5, Python 3.11,
# cxx11abi FALSE), e.g. from the flash-attention GitHub releases:
#   docker build --build-arg FLASH_ATTN_WHEEL=https://.../flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-linux_x86_64.whl -t hyvideo .
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ARG FLASH_ATTN_WHEEL=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY .ci/constraints.txt ./constraints.txt
COPY hyvideo ./hyvideo
# torch stays the base image's (it satisfies torch>=2.4); no test tools ([test] is not installed).
RUN pip install -c constraints.txt ".[demo,web,parallel]" \
 && if [ -n "$FLASH_ATTN_WHEEL" ]; then pip install --no-deps "$FLASH_ATTN_WHEEL"; fi \
 && rm -rf hyvideo build

# The official script names, as thin front doors over the installed package.
COPY sample_video.py gradio_server.py ./
CMD ["hyvideo-sample", "--help"]
