# llenergymeasure for the tensorrt backend, on NVIDIA's TensorRT-LLM release image (NGC).
#
#   docker build -f docker/tensorrt.Dockerfile -t llem-tensorrt .    (from the repository root)
#
# User config: runners: {tensorrt: docker:llem-tensorrt}; see docker/README.md. BASE_IMAGE:
# an NGC TensorRT-LLM release image (>= 0.12; the tag below is an example: use a current one
# that matches your driver). Pulling from NGC may need `docker login` with an NGC API key.
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:0.17.0
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/llenergymeasure
COPY pyproject.toml README.md ./
COPY src ./src
# Only llem's core dependencies: TensorRT-LLM, torch and transformers stay as NVIDIA ships them.
RUN python3 -m pip install . \
 && python3 -c "import importlib.metadata as m, llenergymeasure; print('llem', llenergymeasure.__version__, 'tensorrt_llm', m.version('tensorrt_llm'))"

RUN mkdir -p /llem/run /llem/exchange /llem/hf-cache /llem/cache \
 && chmod 1777 /llem /llem/run /llem/exchange /llem/hf-cache /llem/cache

LABEL org.opencontainers.image.title="llenergymeasure-tensorrt" \
      org.opencontainers.image.description="llem experiments with the tensorrt backend"
ENTRYPOINT ["python3", "-m", "llenergymeasure.entrypoints.container"]
