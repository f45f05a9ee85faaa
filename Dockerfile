# HunyuanVideo (rebuilt) on CUDA. Build:  docker build -t hyvideo .
# With flash-attn (optional, long compile):  docker build --build-arg FLASH_ATTN=1 -t hyvideo .
# Run:  docker run --gpus all -v $PWD/ckpts:/app/ckpts -v $PWD/results:/app/results hyvideo \
#         python sample_video.py --prompt "a cat walks on the grass"
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ARG FLASH_ATTN=0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt pyproject.toml README.md ./
COPY hyvideo ./hyvideo
# torch comes with the base image; requirements.txt's torch>=2.4 is already satisfied.
RUN pip install -r requirements.txt && pip install --no-deps -e .
RUN if [ "$FLASH_ATTN" = "1" ]; then pip install flash-attn --no-build-isolation; fi

COPY . .
CMD ["python", "sample_video.py", "--help"]
