"""Memory estimate against hand-computed numbers for real catalogue architectures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llenergymeasure.catalogue.architectures import get_architecture
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.memory import CUDA_CONTEXT_GB, estimate_memory

LLAMA_1B_PARAMS = 1_235_814_400  # Llama-3.2-1B, tied embeddings (model card: 1.24B)


def test_catalogue_count_used_for_llama_1b() -> None:
    assert get_architecture("llama-3.2-1b").n_params == LLAMA_1B_PARAMS


def test_llama_1b_bf16_by_hand() -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "model": "llama-3.2-1b",
            "precision": "bf16",
            "pytorch": {"batch_size": 8},
            "max_input_tokens": 512,
            "max_output_tokens": 128,
        }
    )
    est = estimate_memory(cfg)
    assert est.weights_gb == pytest.approx(LLAMA_1B_PARAMS * 2 / 1e9)  # ~2.47 GB
    assert est.weights_gb == pytest.approx(2.47, abs=0.01)
    # 2 (K,V) × 16 layers × 8 KV heads × 64 head_dim × 640 tokens × 8 seqs × 2 bytes
    assert est.kv_cache_gb == pytest.approx(2 * 16 * 8 * 64 * 640 * 8 * 2 / 1e9)
    assert est.activations_overhead_gb == pytest.approx(0.1 * est.weights_gb + CUDA_CONTEXT_GB)
    assert est.total_gb == pytest.approx(
        est.weights_gb + est.kv_cache_gb + est.activations_overhead_gb
    )
    assert est.method == "analytic" and est.sequences_in_flight == 8


def test_llama_8b_fp32_and_int4() -> None:
    spec = get_architecture("llama-3.1-8b")
    fp32 = estimate_memory(ExperimentConfig(model="llama-3.1-8b", precision="fp32"))
    assert fp32.weights_gb == pytest.approx(spec.n_params * 4 / 1e9)
    int4 = estimate_memory(ExperimentConfig(model="llama-3.1-8b", precision="int4"))
    embed_and_head = spec.n_params - spec.n_params_non_embedding
    assert int4.weights_gb == pytest.approx(
        (spec.n_params_non_embedding * 0.5 + embed_and_head * 2) / 1e9
    )
    # KV stays bf16 for quantised weights: 2 × 32 × 8 × 128 × 640 tokens × 1 seq × 2 bytes
    assert int4.kv_cache_gb == pytest.approx(2 * 32 * 8 * 128 * 640 * 2 / 1e9)
    assert any("16-bit" in n for n in int4.notes)


def test_vllm_fp8_kv_and_tensor_parallel() -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "model": "llama-3.1-8b",
            "backend": "vllm",
            "n": 10,
            "vllm": {"kv_cache_dtype": "fp8", "tensor_parallel_size": 2},
        }
    )
    est = estimate_memory(cfg)
    assert est.sequences_in_flight == 10  # default 256 capped at n
    assert est.kv_cache_gb == pytest.approx(2 * 32 * 8 * 128 * 640 * 10 * 1 / 1e9)
    assert est.n_gpus == 2
    assert est.per_gpu_gb == pytest.approx(
        (est.weights_gb * 1.1 + est.kv_cache_gb) / 2 + CUDA_CONTEXT_GB
    )


def test_beams_and_synthetic_lengths() -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "model": "tiny-llama",
            "dataset": {"input_len": 32, "output_len": 16},
            "n": 4,
            "decoder": {"strategy": "beam_search", "num_beams": 3},
            "pytorch": {"batch_size": 2},
        }
    )
    est = estimate_memory(cfg)
    assert est.sequence_len_tokens == 48 and est.sequences_in_flight == 6
    assert est.kv_cache_gb == pytest.approx(2 * 2 * 2 * 16 * 48 * 6 * 2 / 1e9)


def test_unknown_hub_id_returns_no_figures() -> None:
    est = estimate_memory(ExperimentConfig(model="some-org/unknown-model"))
    assert est.total_gb is None and est.weights_gb is None and est.method == "unavailable"
    assert "architecture unknown offline" in est.notes[0]


def test_local_config_json_directory(tmp_path: Path) -> None:
    cfg_json = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg_json))
    est = estimate_memory(ExperimentConfig(model=str(tmp_path), precision="fp32"))
    spec = get_architecture("tiny-llama")
    assert est.weights_gb is not None and spec.n_params > 0
    # 2 layers × (attn 64·(64+2·32)+64·64 + mlp 3·64·128 + norms 128) + final norm 64 + embed/head 2·100·64
    n = 2 * (64 * 128 + 64 * 64 + 3 * 64 * 128 + 128) + 64 + 2 * 100 * 64
    assert est.weights_gb == pytest.approx(n * 4 / 1e9)


def test_load_in_4bit_counts_weights_as_int4() -> None:
    """bf16 activations with bitsandbytes NF4 weights: weights sized as int4, KV as bf16."""
    bf16 = estimate_memory(ExperimentConfig(model="llama-3.2-1b", precision="bf16"))
    nf4 = estimate_memory(
        ExperimentConfig(model="llama-3.2-1b", precision="bf16", pytorch={"load_in_4bit": True})
    )
    int4 = estimate_memory(ExperimentConfig(model="llama-3.2-1b", precision="int4"))
    assert nf4.weights_gb == int4.weights_gb
    assert nf4.weights_gb is not None and bf16.weights_gb is not None
    assert nf4.weights_gb < bf16.weights_gb
    assert nf4.kv_cache_gb == bf16.kv_cache_gb
