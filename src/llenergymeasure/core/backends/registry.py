"""Lazy registry of inference backends: name -> "module:Class".

Nothing here imports a framework at module import; availability is checked with
``importlib.util.find_spec`` (which never executes the package). The backend module itself is
imported only by :func:`get_backend`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from functools import cache
from typing import TYPE_CHECKING

from llenergymeasure.config import ssot
from llenergymeasure.exceptions import BackendNotInstalledError, ConfigError

if TYPE_CHECKING:
    from llenergymeasure.core.backends.protocol import InferenceBackend

BACKEND_REGISTRY: dict[str, str] = {
    "pytorch": "llenergymeasure.core.backends.pytorch:PyTorchBackend",
    "vllm": "llenergymeasure.core.backends.vllm:VLLMBackend",
    "tensorrt": "llenergymeasure.core.backends.tensorrt:TensorRTBackend",
}


def list_backends() -> list[str]:
    """Registered backend names, in registry order."""
    return list(BACKEND_REGISTRY)


def _check_known(name: str) -> None:
    """Raise ConfigError with a "did you mean" for an unknown backend name."""
    if name in BACKEND_REGISTRY:
        return
    close = difflib.get_close_matches(name, list_backends(), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown backend {name!r}.{hint} Known: {', '.join(list_backends())}.")


@cache
def is_backend_available(name: str) -> tuple[bool, str]:
    """(available, reason): reason names the missing module and the pip command; never raises
    for a known name (an unknown name raises ConfigError)."""
    _check_known(name)
    for module in ssot.BACKEND_IMPORTS[name]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return False, f"{module} is not installed: {ssot.BACKEND_EXTRAS[name]}"
    return True, "installed"


def get_backend(name: str) -> InferenceBackend:
    """A fresh, uninitialised backend instance.

    Raises ConfigError for unknown names, BackendNotInstalledError (with the pip command)
    when the backend's package is missing.
    """
    _check_known(name)
    available, reason = is_backend_available(name)
    if not available:
        raise BackendNotInstalledError(f"backend {name!r} is not available: {reason}")
    module_name, class_name = BACKEND_REGISTRY[name].split(":")
    module = importlib.import_module(module_name)
    backend: InferenceBackend = getattr(module, class_name)()
    return backend


#: What each backend's run imports (``module`` or ``module:attribute``, for the lazy
#: attributes of transformers): imported up front by :func:`preload_backend`, so that
#: the prompts and model-load phases are timed without them.
_PRELOAD: dict[str, tuple[str, ...]] = {
    "pytorch": (
        "torch",
        "transformers:AutoModelForCausalLM",
        "transformers:PreTrainedTokenizerFast",
        "transformers:GenerationConfig",
        "transformers:StoppingCriteriaList",
    ),
    "vllm": ("torch", "transformers:PreTrainedTokenizerFast", "vllm:LLM"),
    "tensorrt": ("tensorrt_llm",),
}


def preload_backend(name: str, model_type: str | None = None) -> None:
    """Import the framework modules the backend ``name`` runs on and, for pytorch, the
    transformers class of ``model_type`` (the orchestrator does it as the phase
    ``imports``, before prompts and model load). One that fails to import is left for the
    backend itself to report, with its own message."""
    items = list(_PRELOAD.get(name, ()))
    if name == "pytorch" and model_type:
        items.append(f"transformers:{_causal_lm_class(model_type)}")
    for item in filter(lambda i: not i.endswith(":"), items):
        module, _, attribute = item.partition(":")
        try:
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
        except Exception:  # the backend's own import reports it properly, later
            return


def preload_frameworks() -> None:
    """Import what every torch-based backend's run imports (the pytorch list, which holds
    vLLM's torch and tokenizer too; vLLM itself is left to its child), for a study's fork
    server (`study.forkserver_init`)."""
    preload_backend("pytorch", "llama")


def _causal_lm_class(model_type: str) -> str:
    """transformers' causal-LM class name for ``model_type`` ('' when unknown)."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return ""
    return str(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, ""))
