"""Per-step timestamps from the transformers streamer seam (real tiny model on CPU)."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer

from llenergymeasure.core.latency import StepTimestamper, make_streamer
from llenergymeasure.core.latency_clock import TokenClock
from llenergymeasure.core.models.catalogue import get_architecture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_NEW = 6


@pytest.fixture(scope="module")
def tiny_model() -> AutoModelForCausalLM:
    """The catalogue's tiny-llama with seeded random weights, fp32 on CPU."""
    spec = get_architecture("tiny-llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(spec.model_type, **spec.hf_config_dict()), dtype=torch.float32
    )
    return model.eval()


def _inputs() -> dict[str, torch.Tensor]:
    """Two left-padded prompts (lengths 3 and 5)."""
    ids = torch.tensor([[0, 0, 1, 50, 60], [1, 70, 80, 90, 100]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _generate(model: AutoModelForCausalLM, streamer: StepTimestamper, **kw: object) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = model.generate(
            **_inputs(),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            pad_token_id=0,
            streamer=streamer,
            **kw,
        )
    return out


def test_streamer_is_a_transformers_streamer() -> None:
    assert isinstance(make_streamer(TokenClock()), BaseStreamer)


def test_fixed_length_gives_one_monotone_time_per_token(tiny_model: AutoModelForCausalLM) -> None:
    clock = TokenClock()
    streamer = make_streamer(clock)  # no EOS ids: fixed output length
    start = streamer.begin_batch(["a", "b"], [3, 5])
    _generate(tiny_model, streamer, min_new_tokens=MAX_NEW, eos_token_id=2)
    timings = clock.finish()
    assert [t.output_tokens for t in timings] == [MAX_NEW, MAX_NEW]
    assert [t.input_tokens for t in timings] == [3, 5]
    for t in timings:
        assert t.request_start_s == start
        assert t.token_times_s == sorted(t.token_times_s)
        assert t.token_times_s[0] > start
    assert streamer.steps == MAX_NEW  # the prompt put() is not counted as a token


def test_request_retires_after_its_eos(tiny_model: AutoModelForCausalLM) -> None:
    # Learn which token request "a" emits at its third step, then declare it the EOS.
    free = _generate(tiny_model, make_streamer(TokenClock()), eos_token_id=None)
    eos = int(free[0, 5 + 2])
    clock = TokenClock()
    streamer = make_streamer(clock, eos_token_ids=[eos])
    streamer.begin_batch(["a", "b"], [3, 5])
    out = _generate(tiny_model, streamer, eos_token_id=eos)
    timing_a, timing_b = clock.finish()
    first_eos_a = out[0, 5:].tolist().index(eos)
    assert timing_a.output_tokens == first_eos_a + 1 <= 3
    expected_b = out[1, 5:].tolist()
    expected_b_len = expected_b.index(eos) + 1 if eos in expected_b else len(expected_b)
    assert timing_b.output_tokens == expected_b_len


def test_timestamper_with_a_scripted_clock() -> None:
    ticks = itertools.count(start=10.0, step=0.5)
    clock = TokenClock(clock=lambda: next(ticks))
    streamer = StepTimestamper(clock, eos_token_ids=[2])
    streamer.begin_batch(["x", "y"], [4, 4], start_s=0.0)
    streamer.put(torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]]))  # the prompt
    streamer.put(torch.tensor([9, 2]))  # y emits EOS at its first step
    streamer.put(torch.tensor([9, 0]))  # y is padding now
    streamer.end()
    x, y = clock.finish()
    assert x.token_times_s == [10.0, 10.5]
    assert y.token_times_s == [10.0] and y.output_tokens == 1


def test_add_tokens_checks_order_and_finished() -> None:
    """Bulk token times obey the same rules as per-step recording."""
    from llenergymeasure.core.latency_clock import TokenClock

    clock = TokenClock(clock=lambda: 0.0)
    clock.start_batch(["a", "b"], 1.0, input_tokens=[3, 4])
    clock.add_tokens("a", [1.5, 2.0, 2.5])
    clock.add_tokens("b", [1.5])
    clock.finish_request("b")
    with pytest.raises(ValueError, match="after it finished"):
        clock.add_tokens("b", [3.0])
    with pytest.raises(ValueError, match="backwards"):
        clock.add_tokens("a", [2.4])
    timings = {t.output_tokens: t for t in clock.finish()}
    assert timings[3].token_times_s == [1.5, 2.0, 2.5]
    assert timings[1].token_times_s == [1.5]
