"""The DiT forward rows of the Wan 14B benchmark: every configuration timed on the same random Q6_K model and inputs.

Configurations: host bf16 + SDPA (the baseline), the ComfyUI-GGUF style dequantisation (``gguf_style.py``) eager
and under torch.compile, our exact PyTorch dequant, our Triton dequant, + Sage, + torch.compile, and W8A8 per
8-bit format where ``wan_accel_kernels.w8a8`` exists, built by the shipped loader's operations
(``nodes/w8a8_ops.py``: block linears requantised from the same Q6_K tensors at load). Each row: s/step, memory,
cosine / relative L2 against bf16 + SDPA. ``args.dtype`` replaces bf16 everywhere (the CPU dry run: fp32).
"""
from __future__ import annotations

import importlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from benchmarks.lib.gguf_style import make_gguf_style_operations
from benchmarks.lib.wan14b_models import (Bench, Shape, build_plain_model, build_wan, compare, dit_inputs,
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

    @property
    def arithmetic(self) -> str:
        """The precision its linears multiply in: the W8A8 format, else bf16 (GGUF weights are dequantised to it)."""
        return self.dequant if self.model == "w8a8" else "bf16"


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


def w8a8_unavailable(device: torch.device, fmt: str) -> Optional[str]:
    """Why W8A8 ``fmt`` cannot run on ``device`` (no 8-bit units on this GPU), or None (CPU: int8 exact, fp8
    emulated, both for the dry run)."""
    support = w8a8_module().matmul_support(device, fmt)
    return None if support.native or device.type == "cpu" else support.reason


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
    """The models of the section, built on demand: the GGUF ones share one set of random Q6_K blocks. Without
    ``image_branch`` every model has a Wan 2.2 expert's layout (no ``img_emb``)."""

    def __init__(self, host, shape: Shape, device: torch.device, seed: int, dtype: torch.dtype = torch.bfloat16,
                 image_branch: bool = True):
        self.host, self.shape, self.device, self.dtype, self.image_branch = host, shape, device, dtype, image_branch
        self.gguf = build_wan(host, shape, host["gguf_ops"].make_gguf_operations(dtype), device, dtype, image_branch)
        self.tensors = random_tensors(host, self.gguf, device, seed)
        load_gguf_tensors(self.gguf, self.tensors)
        self.gguf_style: Optional[torch.nn.Module] = None

    def q6_k_bytes(self) -> int:
        return sum(t.data.numel() for t in self.tensors.values() if isinstance(t, self.host["reader"].GGUFTensor))

    def bf16_gib(self) -> float:
        return 2 * sum(math.prod(t.shape) for t in self.tensors.values()) / 2**30

    def needed_gib(self, config: Config) -> float:
        """Free memory a new model of ``config`` needs: its weights (16-bit: 2 bytes a value, W8A8: 1) + 10 %."""
        return self.bf16_gib() * (0.5 if config.model == "w8a8" else 1.0) * 1.1

    def model_for(self, config: Config) -> torch.nn.Module:
        """The model of ``config``; plain and W8A8 ones are new (the caller frees them)."""
        if config.model == "gguf":
            return self.gguf
        if config.model == "gguf_style":
            if self.gguf_style is None:
                operations = make_gguf_style_operations(self.host, self.dtype)
                self.gguf_style = load_gguf_tensors(build_wan(self.host, self.shape, operations, self.device,
                                                              self.dtype, self.image_branch), self.tensors)
            return self.gguf_style
        if config.model == "w8a8":  # the loader's own layers, requantising the Q6_K tensors as a GGUF file loads
            operations = self.host["import"]("nodes.w8a8_ops").make_w8a8_operations(self.dtype, config.dequant)
            return load_gguf_tensors(build_wan(self.host, self.shape, operations, self.device, self.dtype,
                                               self.image_branch), self.tensors)
        return build_plain_model(self.host, self.shape, self.tensors, self.device, self.dtype, self.image_branch)


def _estimate(config: Config, forward_s: float, repeat: int, compile_s: float) -> float:
    return (1 + repeat) * forward_s + (compile_s if config.compile else 0.0)


def run_dit_section(host, shape: Shape, bench: Bench, args, fits: BudgetCheck = lambda seconds: None) -> list[Row]:
    """Builds the models and times every configuration within the budget; returns the rows (reference first).

    ``args``: ``seed``, ``repeat``, ``configs`` (name filters), ``compile_backend``, ``dtype`` (bf16 on a GPU) and
    ``compile_s`` / ``forward_s`` (the first estimates of a compile and of one forward, refined by the rows
    measured)."""
    device = bench.device
    start = time.perf_counter()
    models = DitModels(host, shape, device, args.seed, args.dtype)
    bench.sync()
    print(f"DiT dim {shape.dim}, {shape.layers} layers, {shape.heads} heads, ffn {shape.ffn}, {shape.frames}x"
          f"{shape.height}x{shape.width} -> {shape.tokens} tokens; random Q6_K model built in "
          f"{time.perf_counter() - start:.1f} s: {models.q6_k_bytes() / 2**30:.2f} GiB of Q6_K blocks")
    inputs = dit_inputs(shape, device, args.seed, args.dtype)
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
        if config.model == "w8a8" and w8a8_unavailable(device, config.dequant) is not None:
            row.status = f"unavailable: {w8a8_unavailable(device, config.dequant)}"
            continue
        if config.model in ("bf16", "w8a8") and bench.free_gib() < models.needed_gib(config):
            row.status = (f"skipped: its weights need {models.needed_gib(config):.1f} GiB, {bench.free_gib():.1f} GiB "
                          "free")
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


EXPERTS = ("high noise", "low noise")  # Wan 2.2 I2V A14B's two experts, in sampling order


def run_expert_steps(host, shape: Shape, bench: Bench, args, fits: BudgetCheck = lambda seconds: None) -> list[Row]:
    """One DiT step (cfg 1) of each Wan 2.2 I2V A14B expert at ``shape``: each built in turn by :class:`DitModels`
    in the no-``img_emb`` layout with its own random Q6_K weights, our Triton dequant, Sage where it routes (CUDA)
    else the host's SDPA; the first expert is freed before the second is built, as only one is resident.
    ``args`` as :func:`run_dit_section`'s (``forward_s``: the estimate of one step)."""
    device = bench.device
    override, reason = sage_override(host, device) if device.type == "cuda" else (None, "needs CUDA")
    attention = "sage" if override is not None else "sdpa"
    override = override if override is not None else host_sdpa_override(host["attention"])
    inputs = {**dit_inputs(shape, device, args.seed, args.dtype), "clip_fea": None}
    rows = []
    for index, expert in enumerate(EXPERTS):
        row = Row(Config(f"Wan 2.2 {expert} expert: Triton dequant + {'Sage' if attention == 'sage' else 'SDPA'}",
                         "gguf", attention, "triton"))
        rows.append(row)
        budget = fits(_estimate(row.config, args.forward_s, args.repeat, 0.0))
        if budget is not None:
            row.status = f"skipped: {budget}"
            continue
        models = DitModels(host, shape, device, args.seed + 1 + index, args.dtype, image_branch=False)
        out = _time_config(host, row.config, models, override, inputs, bench, args, row)
        del models
        bench.release()
        if out is not None:
            row.notes.append(f"output std {out.std():.3g}" + ("" if torch.isfinite(out).all() else
                                                             ", NON-FINITE values"))
            if attention == "sdpa":
                row.notes.append(f"attention SDPA (Sage unavailable: {reason})")
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
            row.weights_gib = sum(p.nbytes for p in model.parameters()) / 2**30  # W8A8: packed values + scales
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
