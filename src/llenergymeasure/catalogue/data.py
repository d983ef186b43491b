"""Data of the built-in architecture catalogue (shapes as in each model's config.json).

Kept apart from ``architectures.py`` (the logic) so each stays small; pure Python.
"""

from __future__ import annotations

from typing import Any

#: Vocabulary size of the offline tokenizer (``catalogue/llem-bpe.json``).
#: Kept here as a constant so this module stays free of the ``tokenizers`` import;
#: ``tests/unit/test_tokenizer.py`` checks that the shipped tokenizer matches it.
OFFLINE_TOKENIZER_VOCAB_SIZE = 8000
#: Special token ids of the offline tokenizer (pad, bos, eos, unk come first in its vocab).
OFFLINE_PAD_ID, OFFLINE_BOS_ID, OFFLINE_EOS_ID, OFFLINE_UNK_ID = 0, 1, 2, 3


def _llama3_rope(factor: float) -> dict[str, Any]:
    """Llama 3.1/3.2 long-context RoPE scaling block, as in their config.json."""
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def _llama_like(**overrides: Any) -> dict[str, Any]:
    """Common keys of the Llama/Mistral/Qwen2 config.json files."""
    base: dict[str, Any] = {
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
        "attention_bias": False,
        "mlp_bias": False,
        "use_cache": True,
    }
    base.update(overrides)
    return base


CATALOGUE_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-llama": (
        "A few-MB Llama (2 layers, hidden 64, GQA 4/2) sized to the offline tokenizer: "
        "runs on CPU in seconds; for quickstart, tests and pipeline checks.",
        _llama_like(
            model_type="llama",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=OFFLINE_TOKENIZER_VOCAB_SIZE,
            max_position_embeddings=2048,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            pad_token_id=OFFLINE_PAD_ID,
            bos_token_id=OFFLINE_BOS_ID,
            eos_token_id=OFFLINE_EOS_ID,
        ),
    ),
    "tiny-llama-hd64": (
        "A few-MB Llama with head_dim 64 (2 layers, hidden 128, 2 heads) sized to the offline "
        "tokenizer: for the engine backends, whose attention kernels reject tiny-llama's head_dim "
        "16 (vLLM's CPU attention takes head sizes 32, 64, 80, ...); engine tests on CPU.",
        _llama_like(
            model_type="llama",
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=64,
            vocab_size=OFFLINE_TOKENIZER_VOCAB_SIZE,
            max_position_embeddings=2048,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            pad_token_id=OFFLINE_PAD_ID,
            bos_token_id=OFFLINE_BOS_ID,
            eos_token_id=OFFLINE_EOS_ID,
        ),
    ),
    "tiny-gpt2": (
        "A few-MB GPT-2 (2 layers, hidden 64) sized to the offline tokenizer; CPU tests.",
        {
            "model_type": "gpt2",
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 1024,
            "vocab_size": OFFLINE_TOKENIZER_VOCAB_SIZE,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "bos_token_id": OFFLINE_BOS_ID,
            "eos_token_id": OFFLINE_EOS_ID,
            "pad_token_id": OFFLINE_PAD_ID,
        },
    ),
    "gpt2": (
        "GPT-2 small shapes (124M): 12 layers, hidden 768, 12 heads, learned positions.",
        {
            "model_type": "gpt2",
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "n_positions": 1024,
            "vocab_size": 50257,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        },
    ),
    "qwen2.5-0.5b": (
        "Qwen2.5-0.5B shapes (494M): 24 layers, hidden 896, GQA 14/2, tied embeddings.",
        _llama_like(
            model_type="qwen2",
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            bos_token_id=151643,
            eos_token_id=151643,
        ),
    ),
    "qwen2.5-1.5b": (
        "Qwen2.5-1.5B shapes (1.54B): 28 layers, hidden 1536, GQA 12/2, tied embeddings.",
        _llama_like(
            model_type="qwen2",
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=131072,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            bos_token_id=151643,
            eos_token_id=151643,
        ),
    ),
    "llama-3.2-1b": (
        "Llama-3.2-1B shapes (1.24B): 16 layers, hidden 2048, GQA 32/8, tied embeddings.",
        _llama_like(
            model_type="llama",
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling=_llama3_rope(32.0),
            tie_word_embeddings=True,
            bos_token_id=128000,
            eos_token_id=128001,
        ),
    ),
    "llama-3.2-3b": (
        "Llama-3.2-3B shapes (3.21B): 28 layers, hidden 3072, GQA 24/8, tied embeddings.",
        _llama_like(
            model_type="llama",
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=28,
            num_attention_heads=24,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling=_llama3_rope(32.0),
            tie_word_embeddings=True,
            bos_token_id=128000,
            eos_token_id=128001,
        ),
    ),
    "llama-3.1-8b": (
        "Llama-3.1-8B shapes (8.03B): 32 layers, hidden 4096, GQA 32/8, untied lm_head.",
        _llama_like(
            model_type="llama",
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling=_llama3_rope(8.0),
            tie_word_embeddings=False,
            bos_token_id=128000,
            eos_token_id=128001,
        ),
    ),
    "mistral-7b": (
        "Mistral-7B-v0.3 shapes (7.25B): 32 layers, hidden 4096, GQA 32/8, vocab 32768.",
        _llama_like(
            model_type="mistral",
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=32768,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            sliding_window=None,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
}
