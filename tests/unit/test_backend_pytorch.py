"""The pytorch backend end to end on CPU with the catalogue's tiny-llama (random weights)."""

from __future__ import annotations

from typing import Any

import pytest

from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.backends.pytorch import PyTorchBackend, build_generation_config
from llenergymeasure.datasets.types import Prompt
from llenergymeasure.exceptions import BackendError, ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_NEW = 5
TEXTS = [
    "energy",
    "how many joules does one token cost",
    "a much longer prompt about measuring the power draw of a graphics card over time",
    "short one",
    "batching changes the cost per token",
]


def _prompts(texts: list[str] = TEXTS) -> list[Prompt]:
    return [Prompt(id=f"p{i}", text=t) for i, t in enumerate(texts)]


def _config(**kw: Any) -> ExperimentConfig:
    base: dict[str, Any] = {
        "model": "tiny-llama",
        "weights": "random",
        "precision": "fp32",
        "max_output_tokens": MAX_NEW,
        "device": "cpu",
    }
    base.update(kw)
    return ExperimentConfig(**base)


def _run(config: ExperimentConfig, prompts: list[Prompt] | None = None) -> Any:
    prompts = prompts or _prompts()
    backend = PyTorchBackend()
    backend.initialize(config, prompts)
    prepared = backend.tokenize(prompts)
    output = backend.run_inference(prepared)
    backend.cleanup()
    return prepared, output


def _token_lengths(texts: list[str]) -> list[int]:
    tokenizer = load_offline_tokenizer()
    return [len(tokenizer(t)["input_ids"]) for t in texts]


def test_batches_and_token_counts_exclude_padding() -> None:
    prepared, output = _run(_config(pytorch={"batch_size": 2}))
    lengths = _token_lengths(TEXTS)
    assert [b.size for b in prepared.batches] == [2, 2, 1]
    assert output.n_batches == 3 and output.n_requests == 5
    assert output.input_tokens == sum(lengths) == prepared.input_tokens
    assert output.padded_input_tokens > output.input_tokens  # padding existed but not counted
    assert [t.input_tokens for t in output.timings] == lengths


def test_fixed_output_length_and_per_request_timings() -> None:
    _, output = _run(_config(pytorch={"batch_size": 2}))
    assert output.output_tokens == MAX_NEW * len(TEXTS)
    assert output.timing_method == "host_clock" and output.device == "cpu"
    for timing in output.timings:
        assert timing.output_tokens == len(timing.token_times_s) == MAX_NEW
        assert timing.request_start_s <= timing.token_times_s[0]
        assert timing.token_times_s == sorted(timing.token_times_s)
    assert all(len(ids) == MAX_NEW for ids in output.output_token_ids)
    assert output.peak_memory_bytes is None  # CPU: not measured


def test_greedy_is_deterministic_and_the_seed_matters() -> None:
    _, a = _run(_config(random_seed=11))
    _, b = _run(_config(random_seed=11))
    _, c = _run(_config(random_seed=12))
    assert a.output_token_ids == b.output_token_ids
    assert a.output_token_ids != c.output_token_ids


def test_sampling_is_reproducible_with_the_seed() -> None:
    decoder = {"strategy": "sample", "temperature": 1.0, "top_k": 50}
    _, a = _run(_config(decoder=decoder, random_seed=5))
    _, b = _run(_config(decoder=decoder, random_seed=5))
    assert a.output_token_ids == b.output_token_ids


def test_batch_size_does_not_change_greedy_outputs() -> None:
    _, one = _run(_config(pytorch={"batch_size": 1}))
    _, many = _run(_config(pytorch={"batch_size": 5}))
    assert one.output_token_ids == many.output_token_ids


def test_sort_by_length_orders_batches_longest_first() -> None:
    prepared, output = _run(_config(pytorch={"batch_size": 2, "sort_by_length": True}))
    lengths = _token_lengths(TEXTS)
    firsts = [b.input_tokens for b in prepared.batches]
    assert [n for batch in firsts for n in batch] == sorted(lengths, reverse=True)
    assert (
        prepared.padded_input_tokens
        <= _run(_config(pytorch={"batch_size": 2}))[0].padded_input_tokens
    )
    assert output.input_tokens == sum(lengths)


def test_max_input_tokens_truncates_prompts() -> None:
    prepared, output = _run(_config(max_input_tokens=4))
    lengths = _token_lengths(TEXTS)
    assert prepared.truncated_requests == sum(n > 4 for n in lengths)
    assert [t.input_tokens for t in output.timings] == [min(n, 4) for n in lengths]


def test_static_cache_matches_dynamic_cache_on_cpu() -> None:
    cfg = {"batch_size": 2, "cache_implementation": "static"}
    prepared, static = _run(_config(pytorch=cfg))
    _, dynamic = _run(_config(pytorch={"batch_size": 2}))
    assert len({b.padded_length for b in prepared.batches}) == 1  # one compiled length
    assert static.output_token_ids == dynamic.output_token_ids
    assert static.input_tokens == dynamic.input_tokens


def test_warmup_covers_every_distinct_shape() -> None:
    backend = PyTorchBackend()
    config = _config(pytorch={"batch_size": 2, "cache_implementation": "static"})
    backend.initialize(config, _prompts())
    prepared = backend.tokenize(_prompts())
    assert [b.shape_key for b in prepared.distinct_shape_batches()] == [
        (2, prepared.batches[0].padded_length),
        (1, prepared.batches[0].padded_length),
    ]
    assert backend.warmup_batches(prepared) == prepared.distinct_shape_batches()
    assert backend.warmup_step(prepared) > 0
    assert backend.device_indices() == []
    backend.synchronize()  # a no-op on CPU, must not raise


def test_beam_search_reports_e2e_only_with_a_reason() -> None:
    _, output = _run(_config(decoder={"strategy": "beam_search", "num_beams": 2}))
    assert output.timing_method == "e2e_only"
    assert "beam search" in (output.ttft_not_measured_reason or "")
    assert output.output_tokens == MAX_NEW * len(TEXTS)
    assert all(t.token_times_s == [] for t in output.timings)
    assert len(output.batch_durations_s) == output.n_batches
    assert sum(output.batch_durations_s) <= output.duration_s


def test_beam_search_warms_up_without_a_step_recorder() -> None:
    backend = PyTorchBackend()
    backend.initialize(_config(decoder={"strategy": "beam_search", "num_beams": 2}), _prompts())
    try:
        assert backend.warmup_step(backend.tokenize(_prompts())) > 0
    finally:
        backend.cleanup()


def test_synthetic_target_length_sets_the_output_length() -> None:
    prompts = [Prompt(id=f"s{i}", text="tokens " * 3, target_output_tokens=3) for i in range(2)]
    prepared, output = _run(_config(), prompts)
    assert prepared.max_new_tokens == 3
    assert output.output_tokens == 6


def test_passthrough_kwargs_reach_generate() -> None:
    _, output = _run(_config(passthrough_kwargs={"max_new_tokens": 2, "min_new_tokens": 2}))
    assert output.output_tokens == 2 * len(TEXTS)


def test_validate_config_warns_about_choices_realised_differently() -> None:
    warnings = PyTorchBackend().validate_config(
        _config(
            pytorch={"num_processes": 2, "torch_compile": True, "cache_implementation": "dynamic"}
        )
    )
    text = " ".join(warnings)
    assert "overridden to static" in text
    assert "num_processes" not in text  # implemented now: the launcher runs it


@pytest.mark.parametrize(
    ("processes", "mode", "n"), [(None, "direct", 1), (1, "processes", 1), (3, "processes", 3)]
)
def test_num_processes_set_even_to_one_asks_for_the_launcher(
    processes: int | None, mode: str, n: int
) -> None:
    config = _config(pytorch={"num_processes": processes} if processes else {})
    caps = PyTorchBackend().get_runtime_capabilities(config)
    assert (caps.launch_mode, caps.n_processes) == (mode, n)


def test_every_gpu_of_a_device_map_is_in_use() -> None:
    """device_map: auto places modules on several GPUs (accelerate's hf_device_map): all
    of them are measured; CPU/disk offload is not a GPU."""
    import torch

    from llenergymeasure.core.backends.pytorch import cuda_indices_of_device_map

    device_map = {
        "model.embed_tokens": 0,
        "model.layers.0": 0,
        "model.layers.1": "cuda:2",
        "model.layers.2": torch.device("cuda", 3),
        "model.layers.3": "cpu",
        "model.norm": "disk",
        "lm_head": 1,
        "extra": torch.device("cpu"),
    }
    assert cuda_indices_of_device_map(device_map) == [0, 1, 2, 3]
    assert cuda_indices_of_device_map({"": "cuda"}) == [0]
    assert cuda_indices_of_device_map({"a": "cpu", "b": "disk"}) == []

    class Sharded:  # what a device_map model looks like to the backend
        hf_device_map = device_map
        device = torch.device("cuda", 0)

    backend = PyTorchBackend()
    backend._model = Sharded()  # type: ignore[assignment]
    backend._device = "cuda:0"
    assert backend.device_indices() == [0, 1, 2, 3]


def test_quantisation_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA only"):
        _run(_config(precision="int4"))


def test_use_before_initialize_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="before initialize"):
        PyTorchBackend().tokenize(_prompts())


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    from llenergymeasure.core.models.loading import load_model_and_tokenizer, torch_dtype_for

    model, _ = load_model_and_tokenizer(_config(), "cpu", torch_dtype_for("fp32"))
    return model


def test_greedy_overrides_sampling_defaults_of_a_pretrained_config(tiny_model: Any) -> None:
    tiny_model.generation_config.do_sample = True
    tiny_model.generation_config.temperature = 0.6
    tiny_model.generation_config.top_p = 0.9
    gen = build_generation_config(tiny_model, _config(), "cpu")
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.num_beams) == (False, None, None, 1)
    sample = _config(decoder={"strategy": "sample", "top_p": 0.5})
    gen = build_generation_config(tiny_model, sample, "cpu")
    assert (gen.do_sample, gen.temperature, gen.top_p) == (True, 0.6, 0.5)


@pytest.mark.parametrize(
    ("section", "cache", "disable_compile", "compile_config"),
    [
        ({}, None, False, False),
        ({"cache_implementation": "static"}, "static", False, False),
        ({"cache_implementation": "static", "torch_compile": False}, "static", True, False),
        ({"torch_compile": True}, "static", False, True),
    ],
)
def test_cache_and_compile_settings_use_the_library_path(
    tiny_model: Any,
    section: dict[str, Any],
    cache: str | None,
    disable_compile: bool,
    compile_config: bool,
) -> None:
    gen = build_generation_config(tiny_model, _config(pytorch=section), "cuda:0")
    assert gen.cache_implementation == cache
    assert bool(gen.disable_compile) is disable_compile
    assert (gen.compile_config is not None) is compile_config


def test_dynamic_cache_warms_up_on_the_first_batch_only() -> None:
    backend = PyTorchBackend()
    backend.initialize(_config(pytorch={"batch_size": 2}), _prompts())
    prepared = backend.tokenize(_prompts())
    assert len(prepared.distinct_shape_batches()) == 3  # every batch has its own length
    assert backend.warmup_batches(prepared) == prepared.batches[:1]


def test_request_ending_at_eos_gets_tokens_and_times_up_to_its_eos() -> None:
    """EOS allowed: a request that emits EOS at step 3 has 3 tokens (EOS included) and 3
    token times, while the others in its batch keep their full length."""
    config = _config(decoder={"ignore_eos": False}, pytorch={"batch_size": 5})
    prompts = _prompts()
    backend = PyTorchBackend()
    backend.initialize(config, prompts)
    try:
        gen = backend._require_generation_config()
        gen.eos_token_id = None  # first run: learn what the random model emits
        prepared = backend.tokenize(prompts)
        free = backend.run_inference(prepared).output_token_ids
        eos = free[0][2]
        expected = [row.index(eos) + 1 if eos in row else len(row) for row in free]
        assert expected[0] <= 3
        gen.eos_token_id = eos
        output = backend.run_inference(prepared)
    finally:
        backend.cleanup()
    assert [t.output_tokens for t in output.timings] == expected
    assert [len(t.token_times_s) for t in output.timings] == expected
    assert [len(ids) for ids in output.output_token_ids] == expected


def test_sdpa_backends_restrict_the_attention_kernels() -> None:
    """math alone gives the default path's tokens; a kernel that cannot run on the CPU
    (memory-efficient attention) is a BackendError naming the field, proof that the
    restriction reached the attention calls."""
    _, default = _run(_config())
    _, math_only = _run(_config(pytorch={"sdpa_backends": ["math"]}))
    assert math_only.output_token_ids == default.output_token_ids
    with pytest.raises(BackendError, match=r"pytorch.sdpa_backends \['efficient'\]"):
        _run(_config(pytorch={"sdpa_backends": ["efficient"]}))


def test_sdpa_backends_need_the_sdpa_attention() -> None:
    with pytest.raises(ValueError, match="sdpa_backends needs attn_implementation sdpa"):
        _config(pytorch={"sdpa_backends": ["flash"], "attn_implementation": "eager"})


@pytest.mark.parametrize("process_exits", [False, True])
def test_cleanup_leaves_memory_to_an_exiting_process(
    process_exits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU, cleanup collects garbage and empties the CUDA cache unless the process exits
    next (a study child: 0.28 s of gc.collect per experiment on the H200 VM)."""
    import gc

    import torch

    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("gc") or 0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    backend = PyTorchBackend()
    backend.initialize(_config(), _prompts())
    backend._device = "cuda:0"  # the GPU branch; nothing on the device is touched here
    backend.cleanup(process_exits=process_exits)
    assert backend._model is None and backend._tokenizer is None  # dropped either way
    assert calls == ([] if process_exits else ["gc", "empty_cache"])
