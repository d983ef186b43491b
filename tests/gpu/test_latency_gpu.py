"""Per-step CUDA-event timestamps against host-side truth (run with ``pytest -m gpu tests/gpu``)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("torch cannot see a CUDA device", allow_module_level=True)

from transformers import AutoConfig, AutoModelForCausalLM, StoppingCriteriaList  # noqa: E402

from llenergymeasure.catalogue.architectures import get_architecture  # noqa: E402
from llenergymeasure.core.latency import make_step_recorder  # noqa: E402
from llenergymeasure.core.latency_clock import TokenClock  # noqa: E402

MAX_NEW = 16


def _tiny_on_cuda() -> AutoModelForCausalLM:
    spec = get_architecture("tiny-llama")
    torch.manual_seed(0)
    config = AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).to("cuda").eval()


def test_cuda_event_times_are_ordered_and_inside_the_generate_call() -> None:
    model = _tiny_on_cuda()
    ids = torch.randint(3, 200, (4, 8), device="cuda")
    clock = TokenClock()
    recorder = make_step_recorder(clock, "cuda:0")
    assert recorder.timing_method == "cuda_events"
    for round_ in range(2):  # the second round reuses the pooled events
        rids = [f"r{round_}-{i}" for i in range(4)]
        start = recorder.begin_batch(rids, [8] * 4)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_NEW,
                min_new_tokens=MAX_NEW,
                do_sample=False,
                pad_token_id=0,
                stopping_criteria=StoppingCriteriaList([recorder]),
            )
        torch.cuda.synchronize()
        end = time.perf_counter()
        assert out.shape[1] - 8 == MAX_NEW
        recorder.end_batch([MAX_NEW, MAX_NEW, MAX_NEW, 5])
    timings = clock.finish()
    assert [t.output_tokens for t in timings] == [MAX_NEW, MAX_NEW, MAX_NEW, 5] * 2
    last_round = timings[4:]
    times = last_round[0].token_times_s
    assert start < times[0] and times == sorted(times) and times[-1] <= end
    assert last_round[3].token_times_s == times[:5]
    assert recorder.steps == 2 * MAX_NEW
