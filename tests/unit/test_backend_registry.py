"""Backend registry: lazy lookup, availability with install hints, did-you-mean."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

from llenergymeasure.core.backends.protocol import InferenceBackend
from llenergymeasure.core.backends.registry import (
    get_backend,
    is_backend_available,
    list_backends,
)
from llenergymeasure.exceptions import BackendNotInstalledError, ConfigError

_ENGINES = [("vllm", "vllm", "vllm"), ("tensorrt", "tensorrt_llm", "tensorrt")]


def test_lists_the_three_backends() -> None:
    assert list_backends() == ["pytorch", "vllm", "tensorrt"]


def test_pytorch_backend_satisfies_the_protocol() -> None:
    backend = get_backend("pytorch")
    assert isinstance(backend, InferenceBackend)
    assert backend.name == "pytorch"
    caps = backend.get_runtime_capabilities()
    assert (caps.launch_mode, caps.cuda_management) == ("direct", "orchestrator")
    assert caps.supports_streaming_timestamps


def test_unknown_backend_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'pytorch'"):
        get_backend("pytorh")
    with pytest.raises(ConfigError, match="unknown backend"):
        is_backend_available("onnx")


@pytest.mark.parametrize(("name", "module", "extra"), _ENGINES)
def test_missing_engine_reports_the_pip_extra(name: str, module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    available, reason = is_backend_available(name)
    assert not available
    assert f'pip install "llenergymeasure[{extra}]"' in reason
    with pytest.raises(BackendNotInstalledError, match=rf"llenergymeasure\[{extra}\]"):
        get_backend(name)


@pytest.mark.parametrize(("name", "module", "extra"), _ENGINES)
def test_importing_a_missing_engine_module_raises_install_hint(
    name: str, module: str, extra: str
) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    sys.modules.pop(f"llenergymeasure.core.backends.{name}", None)
    with pytest.raises(BackendNotInstalledError, match=rf"llenergymeasure\[{extra}\]"):
        importlib.import_module(f"llenergymeasure.core.backends.{name}")


def test_registry_protocol_and_latency_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import llenergymeasure.core.backends.registry as r\n"
        "import llenergymeasure.core.backends.protocol\n"
        "import llenergymeasure.core.backends.pytorch\n"
        "import llenergymeasure.core.latency\n"
        "r.is_backend_available('pytorch')\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
