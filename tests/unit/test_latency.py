"""Per-step timestamps from the stopping-criteria seam (real tiny model on CPU)."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    MaxLengthCriteria,
    StoppingCriteria,
    StoppingCriteriaList,
)

from llenergymeasure.catalogue.architectures import get_architecture
from llenergymeasure.core.latency import StepRecorder, make_step_recorder
from llenergymeasure.core.latency_clock import TokenClock

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


def _generate(model: AutoModelForCausalLM, recorder: StepRecorder, **kw: object) -> torch.Tensor:
    criteria = StoppingCriteriaList([*kw.pop("stopping_criteria", []), recorder])  # type: ignore[misc]
    with torch.inference_mode():
        out: torch.Tensor = model.generate(
            **_inputs(),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            pad_token_id=0,
            stopping_criteria=criteria,
            **kw,
        )
    return out


def test_recorder_is_a_transformers_stopping_criterion() -> None:
    recorder = make_step_recorder(TokenClock())
    assert isinstance(recorder, StoppingCriteria)
    assert recorder.timing_method == "host_clock" and not recorder.uses_cuda_events
    assert make_step_recorder(TokenClock(), "cuda:0").timing_method == "cuda_events"


def test_fixed_length_gives_one_monotone_time_per_token(tiny_model: AutoModelForCausalLM) -> None:
    clock = TokenClock()
    recorder = make_step_recorder(clock)
    start = recorder.begin_batch(["a", "b"], [3, 5])
    out = _generate(tiny_model, recorder, min_new_tokens=MAX_NEW, eos_token_id=2)
    before_end = clock.now()
    recorder.end_batch([MAX_NEW, MAX_NEW])
    timings = clock.finish()
    assert out.shape[1] - 5 == MAX_NEW == recorder.steps  # one call per generated token
    assert [t.output_tokens for t in timings] == [MAX_NEW, MAX_NEW]
    assert [t.input_tokens for t in timings] == [3, 5]
    for t in timings:
        assert t.request_start_s == start
        assert start < t.token_times_s[0]
        assert t.token_times_s == sorted(t.token_times_s)
        assert t.token_times_s[-1] <= before_end


def test_recorder_never_stops_generation_but_other_criteria_still_do(
    tiny_model: AutoModelForCausalLM,
) -> None:
    recorder = make_step_recorder(TokenClock())
    recorder.begin_batch(["a", "b"], [3, 5])
    out = _generate(tiny_model, recorder, stopping_criteria=[MaxLengthCriteria(5 + 2)])
    assert out.shape[1] == 5 + 2 and recorder.steps == 2


def test_request_that_stopped_early_gets_its_first_steps_only() -> None:
    ticks = itertools.count(start=10.0, step=0.5)
    clock = TokenClock(clock=lambda: next(ticks))
    recorder = StepRecorder(clock)
    assert recorder.begin_batch(["x", "y"], [4, 4]) == 10.0
    ids = torch.zeros((2, 5), dtype=torch.long)
    for _ in range(3):
        not_done = recorder(ids, None)
        assert not_done.tolist() == [False, False]
    recorder.end_batch([3, 1])  # y emitted EOS at its first step
    x, y = clock.finish()
    assert x.token_times_s == [10.5, 11.0, 11.5]
    assert y.token_times_s == [10.5] and y.output_tokens == 1
    with pytest.raises(ValueError, match="after it finished"):
        clock.add_tokens("y", [12.0])


def test_end_batch_rejects_counts_that_do_not_fit() -> None:
    recorder = StepRecorder(TokenClock())
    recorder.begin_batch(["x"], [4])
    recorder(torch.zeros((1, 5), dtype=torch.long), None)
    with pytest.raises(ValueError, match="only 1 steps ran"):
        recorder.end_batch([2])
    with pytest.raises(ValueError, match="one token count per request"):
        recorder.end_batch([1, 1])


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
