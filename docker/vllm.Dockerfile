# llenergymeasure for the vllm backend, on vLLM's own image (vLLM, its torch and CUDA).
#
#   docker build -f docker/vllm.Dockerfile -t llem-vllm .            (from the repository root)
#
# User config: runners: {vllm: docker:llem-vllm}; see docker/README.md. BASE_IMAGE: a vLLM
# release image (>= 0.6); the tag below was current when this file was written.
ARG BASE_IMAGE=vllm/vllm-openai:v0.6.6
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/llenergymeasure
COPY pyproject.toml README.md ./
COPY src ./src
# Only llem's core dependencies: vLLM, torch and transformers stay exactly as vLLM ships them.
RUN python3 -m pip install . \
 && python3 -c "import importlib.metadata as m, llenergymeasure; print('llem', llenergymeasure.__version__, 'vllm', m.version('vllm'))"

RUN mkdir -p /llem/run /llem/exchange /llem/hf-cache /llem/cache \
 && chmod 1777 /llem /llem/run /llem/exchange /llem/hf-cache /llem/cache

LABEL org.opencontainers.image.title="llenergymeasure-vllm" \
      org.opencontainers.image.description="llem experiments with the vllm backend"
# The base image starts the OpenAI server; ours runs one llem experiment.
ENTRYPOINT ["python3", "-m", "llenergymeasure.entrypoints.container"]
