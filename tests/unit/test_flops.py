"""Analytic FLOPs: hand-computed tiny architecture, and a cross-check against a real Llama.

The cross-check counts FLOPs of a random-weight tiny transformers Llama with torch's own
``FlopCounterMode`` (matmul FLOPs, independent of our formula) during ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from llenergymeasure.core.metrics import (
    attention_flops_per_token,
    decode_flops,
    estimate_flops,
    prefill_flops,
)


@dataclass(frozen=True)
class Arch:
    """Hand-sized shapes; satisfies core.metrics.TransformerShape."""

    n_params_non_embedding: int = 1000
    n_layers: int = 2
    n_heads: int = 2
    n_kv_heads: int = 1
    head_dim: int = 4
    hidden_size: int = 8
    n_params_lm_head: int = 0


def test_attention_flops_per_token_hand_value() -> None:
    # 2 (QK^T and AV) * 2 (multiply-add) * context 5 * 2 heads * 4 head_dim * 2 layers = 320
    assert attention_flops_per_token(Arch(), 5) == 320


def test_single_request_hand_computed() -> None:
    # L_in = 3, n_out = 3; attention costs 4 * 2 heads * 4 dim * 2 layers = 64 FLOPs per key
    # prefill: 2*1000*3 = 6000 linear + 64 * (1 + 2 + 3 causal keys) = 384  -> 6384
    # decode : 2 steps (token 1 came from prefill), contexts 4 and 5:
    #          2*1000*2 = 4000 linear + 64 * (4 + 5) = 576                    -> 4576
    est = estimate_flops(Arch(), [3], [3], duration_s=2.0)
    assert (est.prefill_flops, est.decode_flops, est.total_flops) == (6384, 4576, 10960)
    assert est.flops_per_output_token == pytest.approx(10960 / 3)
    assert est.achieved_tflops_per_s == pytest.approx(10960 / 2.0 / 1e12)
    assert est.method == "analytic: 2·N_non_embedding per token + attention"


def test_lm_head_counted_once_per_output_token_when_known() -> None:
    # same request, lm_head of 50 params: + 2*50 in prefill (1st token), + 2*50 per decode step
    est = estimate_flops(Arch(n_params_lm_head=50), [3], [3])
    assert (est.prefill_flops, est.decode_flops) == (6384 + 100, 4576 + 200)
    assert est.method.endswith("+ 2·N_lm_head per output token")


def test_several_requests_add_up_and_edge_lengths() -> None:
    # second request L_in = 1, n_out = 1: prefill 2*1000*1 + 64*1 = 2064, no decode step
    est = estimate_flops(Arch(), [3, 1], [3, 1])
    assert est.prefill_flops == 6384 + 2064
    assert est.decode_flops == 4576
    assert estimate_flops(Arch(), [], []).total_flops == 0
    assert estimate_flops(Arch(), [4], [0]).flops_per_output_token is None
    with pytest.raises(ValueError):
        estimate_flops(Arch(), [1, 2], [1])


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (7, 2), (13, 9), (64, 33)])
def test_closed_form_matches_token_by_token_sum(n_in: int, n_out: int) -> None:
    arch = Arch(n_params_non_embedding=12345, n_layers=3, n_heads=5, head_dim=7)
    per_key = 4 * 5 * 7 * 3
    # token-by-token: prompt position i sees i+1 keys; decode step for output k sees n_in+k-1
    slow_prefill = sum(2 * 12345 + per_key * (i + 1) for i in range(n_in))
    slow_decode = sum(2 * 12345 + per_key * (n_in + k - 1) for k in range(2, n_out + 1))
    assert prefill_flops(arch, n_in) == slow_prefill
    assert decode_flops(arch, n_in, n_out) == slow_decode


# ----------------------------------------------------------------------------- real model


@dataclass(frozen=True)
class _CountedArch:
    n_params_non_embedding: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_params_lm_head: int


N_LAYERS, HIDDEN, N_HEADS, N_KV, VOCAB = 2, 64, 4, 2, 97


@pytest.fixture(scope="module")
def tiny_llama():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _param_counts(model) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(N_non_embedding, N in Linear layers of the blocks), both excluding embed/lm_head."""
    import torch

    non_emb = sum(
        p.numel()
        for name, p in model.named_parameters()
        if "embed_tokens" not in name and "lm_head" not in name
    )
    linear = sum(
        m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name != "lm_head"
    )
    return non_emb, linear


def _count_generate(model, n_in: int, n_out: int) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """Counted (mm FLOPs without lm_head, lm_head FLOPs, bmm attention FLOPs) of generate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(3, VOCAB, (1, n_in), generator=torch.Generator().manual_seed(1))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model.generate(
            ids, max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False, pad_token_id=0
        )
    assert out.shape[1] == n_in + n_out
    counts = counter.get_flop_counts()
    mm = torch.ops.aten.mm
    head = sum(counts["LlamaForCausalLM.lm_head"].values())
    return counts["Global"][mm] - head, head, counts["Global"][torch.ops.aten.bmm]


def test_real_llama_linear_part_is_2_n_per_token(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    n_in, n_out = 10, 5
    n_non_emb, n_linear = _param_counts(tiny_llama)
    linear_flops, _, _ = _count_generate(tiny_llama, n_in, n_out)
    forwarded_tokens = n_in + n_out - 1  # the last generated token is never fed back
    assert linear_flops == 2 * n_linear * forwarded_tokens
    # N_non_embedding also holds the RMSNorm weights (no matmul): (2 layers * 2 + 1) * 64
    assert n_non_emb - n_linear == (2 * N_LAYERS + 1) * HIDDEN
    assert 2 * n_non_emb * forwarded_tokens == pytest.approx(linear_flops, rel=0.01)


def test_real_llama_generate_total_matches_estimate(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    n_in, n_out = 10, 5
    _, n_linear = _param_counts(tiny_llama)
    linear, head, attention = _count_generate(tiny_llama, n_in, n_out)
    arch = _CountedArch(n_linear, N_LAYERS, N_HEADS, N_KV, HIDDEN // N_HEADS, VOCAB * HIDDEN)
    est = estimate_flops(arch, [n_in], [n_out])
    # eager attention multiplies the full L_in x L_in score matrix in prefill and masks it
    # afterwards; the estimate counts only the causal (unmasked) L_in(L_in+1)/2 pairs.
    masked_pairs = n_in * n_in - n_in * (n_in + 1) // 2
    masked_flops = masked_pairs * attention_flops_per_token(arch, 1)
    assert head == 2 * VOCAB * HIDDEN * n_out  # one logits row per output token
    assert linear + head + attention == est.total_flops + masked_flops
