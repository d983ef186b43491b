"""The fake docker's "vllm image": vLLM played by ``llenergymeasure.testing.stand_in_vllm``.

On the PYTHONPATH of that image only (tests). The host venv has no vLLM, as a real host
often has none: the point of the Docker runner is that a study's vLLM experiments run in an
image that has it. The stand-in is the one the engine backend's own tests use (continuous
batching over ``max_num_seqs`` slots, per-request statistics on vLLM's clocks, the
``EngineArgs`` fields of 0.26/0.32), standing in for the CUDA build a real vllm image holds.
It measures nothing about vLLM; it lets the study machinery, the container protocol and the
result be checked end to end.
"""

from __future__ import annotations

import sys

from llenergymeasure.testing import stand_in_vllm

_modules = stand_in_vllm(platform="cuda")
for _name, _module in _modules.items():
    if _name != "vllm":
        sys.modules[_name] = _module
LLM = _modules["vllm"].LLM
SamplingParams = _modules["vllm"].SamplingParams
__version__ = _modules["vllm"].__version__
