"""A stand-in for vLLM, on the PYTHONPATH of the fake docker's "vllm image" only (tests).

The host venv has no vLLM, as a real host often has none: the point of the Docker runner is
that the vLLM experiments of a study run in an image that has it. This package plays that
image's vLLM on CPU: ``LLM(**engine_args).generate(prompts, sampling)`` returns, for each
token-id prompt, ``max_tokens`` token ids, with V0-style wall-clock first/last token times,
after a short CPU-bound loop so that the window is not empty. It measures nothing about
vLLM; it lets the study machinery, the container protocol and the result be checked end to
end.
"""

from __future__ import annotations

import time
import types
from typing import Any

__version__ = "0.0.0+llem-test-stand-in"


class SamplingParams:
    """Keeps the sampling arguments the backend passes."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.max_tokens = int(kwargs.get("max_tokens") or 16)


class LLM:
    """Answers ``generate`` with ``max_tokens`` tokens per prompt."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def generate(
        self, prompts: list[Any], sampling: SamplingParams, use_tqdm: bool = True
    ) -> list[Any]:
        outputs = []
        for _prompt in prompts:
            first = time.time()
            _spin(0.002)
            last = time.time()
            done = types.SimpleNamespace(token_ids=list(range(sampling.max_tokens)))
            metrics = types.SimpleNamespace(first_token_time=first, last_token_time=last)
            outputs.append(types.SimpleNamespace(outputs=[done], metrics=metrics))
        return outputs

    def shutdown(self) -> None:
        """Nothing to release."""


def _spin(seconds: float) -> None:
    """Busy for ``seconds`` (the stand-in's "work")."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
