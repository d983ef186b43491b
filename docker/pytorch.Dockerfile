# llenergymeasure for the pytorch backend (transformers) on a CUDA build of torch.
#
#   docker build -f docker/pytorch.Dockerfile -t llem-pytorch .      (from the repository root)
#
# The study runner starts one container per experiment (user config runners:
# pytorch: docker:llem-pytorch) and runs python3 -m llenergymeasure.entrypoints.container in
# it; see docker/README.md. BASE_IMAGE: any image with Python >= 3.10 and a CUDA torch >= 2.4
# (the tag below was current when this file was written: pick the one matching your driver).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/llenergymeasure
COPY pyproject.toml README.md ./
COPY src ./src
# torch comes from the base image (a CUDA build): the extra's range accepts it, pip keeps it.
RUN python3 -m pip install ".[pytorch]" \
 && python3 -c "import llenergymeasure, torch; print('llem', llenergymeasure.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)"

# Mount points of the runner (run dir, exchange dir, HF cache, llem cache). World-writable
# with the sticky bit: the runner starts containers as the invoking user (--user uid:gid).
RUN mkdir -p /llem/run /llem/exchange /llem/hf-cache /llem/cache \
 && chmod 1777 /llem /llem/run /llem/exchange /llem/hf-cache /llem/cache

LABEL org.opencontainers.image.title="llenergymeasure-pytorch" \
      org.opencontainers.image.description="llem experiments with the pytorch backend"
ENTRYPOINT ["python3", "-m", "llenergymeasure.entrypoints.container"]
