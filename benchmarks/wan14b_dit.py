"""The DiT forward rows of the Wan 14B benchmark: every configuration timed on the same random Q6_K model and inputs.

Configurations: host bf16 + SDPA (the baseline), the ComfyUI-GGUF style dequantisation (``gguf_style.py``) eager
and under torch.compile, our exact PyTorch dequant, our Triton dequant, + Sage, + torch.compile, and W8A8 per
8-bit format where ``wan_accel_kernels.w8a8`` exists. Each row: s/step, memory, cosine / relative L2 against bf16 + SDPA.
"""
from __future__ import annotations

import importlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from gguf_style import make_gguf_style_operations
from wan14b_models import (Bench, Shape, build_bf16_model, build_wan, compare, dit_inputs, is_q6_k_weight,
                           load_gguf_tensors, random_tensors)

BudgetCheck = Callable[[float], Optional[str]]  # estimated seconds -> why it does not fit, or None


@dataclass(frozen=True)
class Config:
    """One DiT configuration: which model, attention and dequantisation path, compiled or not."""

    name: str
    model: str           # "bf16", "gguf", "gguf_style" or "w8a8"
    attention: str       # "sdpa" or "sage"
    dequant: str = ""    # WAN_ACCEL_GGUF_DEQUANT for gguf models; the 8-bit format for w8a8
    compile: bool = False


CONFIGS = (
    Config("host bf16 + SDPA", "bf16", "sdpa"),
    Config("ComfyUI-GGUF style (fp16 block math) + SDPA", "gguf_style", "sdpa"),
    Config("ComfyUI-GGUF style + torch.compile", "gguf_style", "sdpa", compile=True),
    Config("our exact torch dequant + SDPA", "gguf", "sdpa", "torch"),
    Config("ours: Triton dequant + SDPA", "gguf", "sdpa", "triton"),
    Config("ours + Sage", "gguf", "sage", "triton"),
    Config("ours + Sage + torch.compile", "gguf", "sage", "triton", compile=True),
)


@dataclass
class Row:
    """What one configuration measured (``status`` says why a row has no numbers)."""

    config: Config
    status: str = "ok"
    seconds: float = math.nan
    first_call: float = math.nan
    weights_gib: float = math.nan
    peak_gib: float = math.nan  # this model's weights + the forward's working memory (other models excluded)
    cosine: float = math.nan
    relative_l2: float = math.nan
    notes: list = field(default_factory=list)


def w8a8_module():
    """``wan_accel_kernels.w8a8`` when that package exists in this checkout, else None."""
    if importlib.util.find_spec("wan_accel_kernels.w8a8") is None:
        return None
    return importlib.import_module("wan_accel_kernels.w8a8")


def configurations(device: torch.device) -> list[Config]:
    """:data:`CONFIGS` plus one W8A8 row per 8-bit format of ``wan_accel_kernels.w8a8`` (when it exists), with Sage on CUDA
    (the turbo configuration) and SDPA elsewhere (so the CPU dry run exercises it)."""
    w8a8 = w8a8_module()
    attention = "sage" if device.type == "cuda" else "sdpa"
    label = "Sage" if attention == "sage" else "SDPA"
    extra = [] if w8a8 is None else [Config(f"W8A8 {fmt} + {label}", "w8a8", attention, fmt) for fmt in w8a8.FORMATS]
    return [*CONFIGS, *extra]


class W8A8Linear(torch.nn.Module):
    """A Linear whose weight is a ``wan_accel_kernels.w8a8`` QuantizedWeight: 8-bit activations times 8-bit weights."""

    def __init__(self, w8a8, weight: torch.Tensor, bias: Optional[torch.Tensor], fmt: str):
        super().__init__()
        self.w8a8, self.qweight, self.bias = w8a8, w8a8.quantize_weight(weight, fmt), bias

    @property
    def weight(self) -> torch.Tensor:
        """The 8-bit values, for host code that inspects a layer's weight (ComfyUI 0.33's ``linear_input_act``)."""
        return self.qweight.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w8a8.linear(x, self.qweight, self.bias)


def to_w8a8(model: torch.nn.Module, fmt: str) -> torch.nn.Module:
    """Replaces the Q6_K-quantisable Linears of a bf16 model by W8A8 ones, one at a time (bounded extra memory)."""
    w8a8 = w8a8_module()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and is_q6_k_weight("x.weight", tuple(child.weight.shape)):
                setattr(parent, name, W8A8Linear(w8a8, child.weight.data, child.bias, fmt))
    return model


def host_sdpa_override(attention_module) -> Callable:
    """``optimized_attention_override`` that runs the host's own ``attention_pytorch`` (torch SDPA)."""
    def override(original, *args, **kwargs):
        return attention_module.attention_pytorch(*args, **kwargs)
    return override


def sage_override(host, device: torch.device):
    """(override, None) using our ``wan_accel_kernels.attention`` patch when it routes bf16 head_dim 128 to sage, else
    (None, reason the row is unavailable)."""
    try:
        attention = host["import"]("wan_accel_kernels.attention")
    except ImportError as error:
        return None, f"wan_accel_kernels.attention does not import ({error})"
    override = attention.AttentionOverride(attention.AUTO, attention.probe_sage())
    decision = override.expected_decision(device, torch.bfloat16, 128)
    if decision.backend != attention.SAGE:
        return None, f"sage not used here: {decision.describe()}"
    return override, None


class DitModels:
    """The models of the section, built on demand: the GGUF ones share one set of random Q6_K blocks."""

    def __init__(self, host, shape: Shape, device: torch.device, seed: int):
        self.host, self.shape, self.device = host, shape, device
        self.gguf = build_wan(host, shape, host["gguf_ops"].make_gguf_operations(torch.bfloat16), device)
        self.tensors = random_tensors(host, self.gguf, device, seed)
        load_gguf_tensors(self.gguf, self.tensors)
        self.gguf_style: Optional[torch.nn.Module] = None

    def q6_k_bytes(self) -> int:
        return sum(t.data.numel() for t in self.tensors.values() if isinstance(t, self.host["reader"].GGUFTensor))

    def bf16_gib(self) -> float:
        return 2 * sum(math.prod(t.shape) for t in self.tensors.values()) / 2**30

    def model_for(self, config: Config) -> torch.nn.Module:
        """The model of ``config``; bf16 and W8A8 ones are new (the caller frees them)."""
        if config.model == "gguf":
            return self.gguf
        if config.model == "gguf_style":
            if self.gguf_style is None:
                operations = make_gguf_style_operations(self.host)
                self.gguf_style = load_gguf_tensors(build_wan(self.host, self.shape, operations, self.device),
                                                    self.tensors)
            return self.gguf_style
        model = build_bf16_model(self.host, self.shape, self.tensors, self.device)
        return to_w8a8(model, config.dequant) if config.model == "w8a8" else model


def _estimate(config: Config, forward_s: float, repeat: int, compile_s: float) -> float:
    return (1 + repeat) * forward_s + (compile_s if config.compile else 0.0)


def run_dit_section(host, shape: Shape, bench: Bench, args, fits: BudgetCheck = lambda seconds: None) -> list[Row]:
    """Builds the models and times every configuration within the budget; returns the rows (reference first).

    ``args``: ``seed``, ``repeat``, ``configs`` (name filters), ``compile_backend`` and ``compile_s`` / ``forward_s``
    (the first estimates of a compile and of one forward, refined by the rows measured)."""
    device = bench.device
    start = time.perf_counter()
    models = DitModels(host, shape, device, args.seed)
    bench.sync()
    print(f"DiT dim {shape.dim}, {shape.layers} layers, {shape.heads} heads, ffn {shape.ffn}, {shape.frames}x"
          f"{shape.height}x{shape.width} -> {shape.tokens} tokens; random Q6_K model built in "
          f"{time.perf_counter() - start:.1f} s: {models.q6_k_bytes() / 2**30:.2f} GiB of Q6_K blocks")
    inputs = dit_inputs(shape, device, args.seed)
    sdpa = host_sdpa_override(host["attention"])
    wanted = [c for c in configurations(device) if not args.configs or any(key in c.name for key in args.configs)]
    rows, reference, forward_s = [], None, args.forward_s
    for config in wanted:
        row = Row(config)
        rows.append(row)
        reason = fits(_estimate(config, forward_s, args.repeat, args.compile_s))
        if reason is not None:
            row.status = f"skipped: {reason}"
            continue
        override = sdpa
        if config.attention == "sage":
            override, reason = sage_override(host, device)
            if override is None:
                row.status = f"unavailable: {reason}"
                continue
        if config.model in ("bf16", "w8a8") and bench.free_gib() < models.bf16_gib() * 1.1:
            row.status = f"skipped: bf16 weights need {models.bf16_gib():.1f} GiB, {bench.free_gib():.1f} GiB free"
            continue
        out = _time_config(host, config, models, override, inputs, bench, args, row)
        if out is None:
            continue
        forward_s = row.seconds
        row.notes.append(f"output std {out.std():.3g}" + ("" if torch.isfinite(out).all() else ", NON-FINITE values"))
        if reference is None:
            reference = out
            if config is not CONFIGS[0]:
                row.notes.append("reference for cosine/L2 (bf16 + SDPA did not run)")
        row.cosine, row.relative_l2 = compare(out, reference)
        if hasattr(override, "stats"):
            row.notes.append(override.stats.describe())
    return rows


def _time_config(host, config: Config, models: DitModels, override, inputs: dict, bench: Bench, args,
                 row: Row) -> Optional[torch.Tensor]:
    """Times one configuration into ``row``; returns its output (float32, CPU) or None when it failed."""
    backend = host["backend"]
    model, out = None, None
    try:
        model = models.model_for(config)
        if config.model == "gguf" and config.dequant:
            os.environ[backend.ENV_VAR] = config.dequant
        if hasattr(override, "begin_run"):
            override.begin_run()
        blocks = [torch.compile(block, backend=args.compile_backend, dynamic=False) if config.compile else block
                  for block in model.blocks]
        original_blocks = model.blocks
        model.blocks = torch.nn.ModuleList(blocks)
        options = {"optimized_attention_override": override}

        def forward():
            with torch.inference_mode():
                return model(inputs["x"], inputs["timestep"], inputs["context"], clip_fea=inputs["clip_fea"],
                             transformer_options=options)
        try:
            row.weights_gib = (sum(p.nbytes for p in model.parameters()) + sum(
                m.qweight.data.nbytes + m.qweight.scale.nbytes for m in model.modules()
                if isinstance(m, W8A8Linear))) / 2**30
            before = bench.allocated_gib()
            bench.reset_peak()
            path_record = host["path_record"]
            with path_record.recording(path_record.DequantRecord()) as dequant:
                row.first_call, row.seconds, out = bench.time(forward, args.repeat)
            if config.model == "gguf":
                row.notes.append(dequant.summary())
            row.peak_gib = row.weights_gib + bench.peak_gib() - before
        finally:
            model.blocks = original_blocks
        if config.compile:
            row.notes.append(f"torch.compile backend {args.compile_backend}; first call includes compiling")
        return out.float().cpu()
    except Exception as error:  # a configuration that fails (e.g. compile) must not hide the others' numbers
        row.status = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        return None
    finally:
        os.environ.pop(backend.ENV_VAR, None)
        if model is not None and config.model in ("bf16", "w8a8"):
            del model
            bench.release()
