"""LoRA on the GGUF DiT: step time and resident weights with and without a LoRA on every block linear, beside a
dense float model patched the host's way, all measured in the same run.

    COMFYUI_PATH=... python -m benchmarks.gguf_lora [--dim 256 --layers 4 --rank 8 --repeats 5]

Rows: GGUF Q6_K plain, GGUF + LoRA (our per-forward side path, blocks stay quantised), float plain, float + LoRA
(the host's full-load patch: a dense patched copy). Ratios are against the same model without the LoRA.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.lib.timing import best_time
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_models import tiny_wan_i2v_state_dict, tiny_wan_lora_state_dict, write_tiny_wan_i2v
from wan_accel.convert import convert


def _inputs(tokens_side: int):
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(1, 36, 2, tokens_side, tokens_side, generator=generator), torch.tensor([600.0]),
            torch.randn(1, 12, 4096, generator=generator))


def _measure(patcher, inputs, repeats: int) -> tuple[float, int]:
    """Best-of-N forward seconds of a fully loaded model and its resident parameter and buffer bytes."""
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=0)
    try:
        resident = sum(p.nbytes for p in patcher.model.parameters()) + sum(b.nbytes for b in patcher.model.buffers())
        with torch.no_grad():
            seconds = best_time(lambda: patcher.model.diffusion_model(*inputs), repeats)
        return seconds, resident
    finally:
        patcher.unpatch_model()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--tokens-side", type=int, default=16, help="latent side; tokens = 2 * (side / 2) ** 2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    import_host()
    import comfy.sd

    gguf_model = import_pack_module("nodes.gguf_model")
    shape = dict(dim=args.dim, layers=args.layers, ffn=2 * args.dim)
    with tempfile.TemporaryDirectory() as folder:
        source = write_tiny_wan_i2v(Path(folder) / "dit.safetensors", **shape)
        gguf = convert(source, Path(folder) / "dit-Q6_K.gguf", "Q6_K", progress=False)
        lora = tiny_wan_lora_state_dict(tiny_wan_i2v_state_dict(**shape), rank=args.rank)
        inputs = _inputs(args.tokens_side)
        quantised = gguf_model.load_wan_gguf(gguf, "fp32").patcher
        dense = comfy.sd.load_diffusion_model(str(source), model_options={"dtype": torch.float32})
        rows = {}
        for name, patcher in (("GGUF Q6_K", quantised), ("float (dense)", dense)):
            rows[name] = _measure(patcher, inputs, args.repeats)
            patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)
            rows[name + " + LoRA"] = _measure(patched, inputs, args.repeats)
    lora_bytes = sum(t.nbytes for k, t in lora.items() if not k.endswith(".alpha"))
    print(f"Wan DiT dim {args.dim}, {args.layers} blocks, rank-{args.rank} LoRA on every block linear "
          f"({lora_bytes / 2**20:.2f} MiB), {2 * (args.tokens_side // 2) ** 2} tokens, CPU, best of {args.repeats}")
    print("| model | s/forward | vs without LoRA | resident weights MiB |")
    print("|---|---|---|---|")
    for name, (seconds, resident) in rows.items():
        base = rows[name.replace(" + LoRA", "")][0]
        print(f"| {name} | {seconds:.4f} | {seconds / base:.2f}x | {resident / 2**20:.2f} |")


if __name__ == "__main__":
    main()
