"""Backend-specific configuration sections (`pytorch:`, `vllm:`, `tensorrt:`).

Every field defaults to ``None``, meaning "the backend's own default", so the config hash
records explicit choices only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PyTorchConfig(_Section):
    """transformers / PyTorch backend options."""

    batch_size: int | None = Field(None, ge=1, le=4096, description="Prompts per generate() call.")
    sort_by_length: bool | None = Field(
        None, description="Sort prompts by length before batching (less padding)."
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="transformers attention implementation."
    )
    sdpa_backends: list[Literal["flash", "efficient", "cudnn", "math"]] | None = Field(
        None,
        min_length=1,
        description="The scaled-dot-product-attention kernels PyTorch may use (its "
        "torch.nn.attention.sdpa_kernel; attn_implementation sdpa only). Default: PyTorch's "
        "choice; on Hopper that is cuDNN, which builds a plan for every new sequence length.",
    )
    torch_compile: bool | None = Field(
        None, description="Compile the forward pass (the library's static-cache compile path)."
    )
    cache_implementation: Literal["dynamic", "static"] | None = Field(
        None, description="KV cache: dynamic (default) or static (enables auto-compile)."
    )
    load_in_4bit: bool | None = Field(None, description="bitsandbytes NF4 weights.")
    load_in_8bit: bool | None = Field(None, description="bitsandbytes LLM.int8() weights.")
    device_map: str | None = Field(
        None, description='"auto": one model split across the visible GPUs (all measured).'
    )
    num_processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description=(
            "Data-parallel worker processes started by llem, one per GPU (CPU: processes on "
            "the CPU); prompts are sharded round-robin. Set (even to 1): the run goes "
            "through the launcher and writes raw/ per-process results."
        ),
    )

    @model_validator(mode="after")
    def _one_quantisation(self) -> PyTorchConfig:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are exclusive: choose one")
        return self

    @model_validator(mode="after")
    def _sdpa_backends_need_sdpa(self) -> PyTorchConfig:
        if self.sdpa_backends and self.attn_implementation not in (None, "sdpa"):
            raise ValueError(
                f"sdpa_backends needs attn_implementation sdpa (the default), not "
                f"{self.attn_implementation}; drop one of the two"
            )
        return self


class VLLMConfig(_Section):
    """vLLM offline engine options (each is an ``EngineArgs`` field of the same name, except
    ``swap_space_gb`` -> ``swap_space``). A field the installed vLLM lacks is rejected before
    the engine starts, naming the version."""

    max_num_seqs: int | None = Field(None, ge=1, le=8192)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    tensor_parallel_size: int | None = Field(None, ge=1, le=64)
    pipeline_parallel_size: int | None = Field(None, ge=1, le=64)
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Fraction of GPU memory for weights + KV cache; on CPU a fraction of the "
        "NUMA node's RAM.",
    )
    kv_cache_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="KV cache size in bytes (overrides gpu_memory_utilization). On CPU llem "
        "sets one sized to the experiment when neither is given.",
    )
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool | None = None
    async_scheduling: bool | None = Field(
        None, description="Overlap scheduling with the forward (vLLM: auto on CUDA)."
    )
    quantization: Literal["awq", "gptq", "fp8", "bitsandbytes"] | None = None
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = None
    max_model_len: int | None = Field(None, ge=1)
    block_size: Literal[8, 16, 32, 64, 128] | None = None
    swap_space_gb: float | None = Field(
        None, ge=0, description="vLLM V0 only (swap_space): vLLM 0.26/0.32 reject it."
    )


class TensorRTConfig(_Section):
    """TensorRT-LLM (LLM API) options."""

    max_batch_size: int | None = Field(None, ge=1, le=8192)
    tp_size: int | None = Field(None, ge=1, le=64)
    pp_size: int | None = Field(None, ge=1, le=64)
    max_seq_len: int | None = Field(None, ge=1)
    max_input_len: int | None = Field(None, ge=1)
    max_num_tokens: int | None = Field(None, ge=1)
    quantization: Literal["fp8", "int8_wo", "int4_wo", "int4_awq", "w8a8_sq"] | None = None
    kv_cache_free_gpu_memory_fraction: float | None = Field(None, gt=0.0, le=1.0)
    engine_cache_dir: str | None = Field(None, description="Where built engines are cached.")


BACKEND_SECTIONS: dict[str, type[_Section]] = {
    "pytorch": PyTorchConfig,
    "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig,
}
