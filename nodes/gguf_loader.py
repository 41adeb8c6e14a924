"""Node "Load Wan DiT (GGUF)": a Wan 2.1 I2V DiT or Wan 2.2 I2V A14B expert from a .gguf file, dequantised per layer.

Its editor badge shows the weights at load, and after each sampling run the dequant path that run observed."""
from __future__ import annotations

from comfy_api.latest import io, ui

from .gguf_model import COMPUTE_CHOICES, COMPUTE_DTYPES, SIXTEEN_BIT, LoadedGGUFModel, load_wan_gguf
from .model_files import ModelFileInput
from .run_context import DEQUANT_TARGET_KEY, install_run_context
from .stats import NodeStats, current_target, report_node_stats

GGUF_EXTENSIONS = {".gguf"}
NODE_ID = "WanAccelLoadDiTGGUF"
UNET_FILE = ModelFileInput("unet_name", "diffusion_models", frozenset(GGUF_EXTENSIONS))


class LoadWanDiTGGUF(io.ComfyNode):
    """Loads a GGUF Wan 2.1 I2V DiT or one Wan 2.2 I2V A14B expert (e.g. Q6_K) so a 14B model fits a 24 GB GPU."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Load Wan DiT (GGUF)",
            category="wan-accel/loaders",
            description="Loads a Wan 2.1 I2V diffusion model, or one Wan 2.2 I2V A14B expert (high "
                        "or low noise: one loader per expert), from a .gguf file in "
                        "models/diffusion_models or models/unet; the Wan 2.2 TI2V 5B is refused. "
                        "Weights stay quantised in memory and are dequantised per layer, on the "
                        "compute device, at every forward; LoRAs apply after dequantisation. "
                        "compute 'int8 W8A8' / 'fp8 W8A8' instead requantises the block linears "
                        "(attention, FFN) once at load and keeps them resident in 8 bits (1.22x the"
                        " Q6_K bytes of those layers, +2.9 GB at 14B; requantising per forward "
                        "would redo that work at every step), multiplying 8-bit activations (one "
                        "scale per token; int8 Hadamard-rotated) on int8/fp8 tensor cores. A LoRA "
                        "is added to the dequantised weight, which is then requantised. A GPU "
                        "without such tensor cores falls back to 16 bits and says why; fp8 on CPU "
                        "is an emulation.",
            inputs=[
                UNET_FILE.combo_input("GGUF file, e.g. wan2.1-i2v-14b-480p-Q6_K.gguf"),
                io.Combo.Input("compute_dtype", options=["auto", *COMPUTE_DTYPES], default="auto",
                               tooltip="dtype the weights are dequantised to and the DiT computes in; "
                                       "auto follows the host's choice for the device"),
                io.Combo.Input("compute", options=list(COMPUTE_CHOICES), default=SIXTEEN_BIT, optional=True,
                               tooltip="bf16/fp16: dequantise and multiply in compute_dtype (the winner's path). "
                                       "int8/fp8 W8A8: block linears in 8 bits; per layer int8 errs less than "
                                       "Q6_K, fp8 about 1.6x more; other layers stay 16-bit"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def validate_inputs(cls, unet_name: str | None = None) -> bool | str:
        """Refuses, at queue time, a file name that is not in the dropdown (see nodes/model_files.py)."""
        return UNET_FILE.validate(unet_name)

    @classmethod
    def execute(cls, unet_name: str, compute_dtype: str, compute: str = SIXTEEN_BIT) -> io.NodeOutput:
        loaded = load_wan_gguf(UNET_FILE.resolve(unet_name), compute_dtype, compute)
        loaded.patcher.model_options["transformer_options"][DEQUANT_TARGET_KEY] = current_target(NODE_ID)
        install_run_context(loaded.patcher)  # its sampling runs report the dequant path they observe
        report_node_stats(NODE_ID, _stats(loaded))
        return io.NodeOutput(loaded.patcher, ui=ui.PreviewText(loaded.summary()))


def _stats(loaded: LoadedGGUFModel) -> NodeStats:
    """The editor badge's numbers known at load: the weights' GGUF types and the bytes kept resident. The dequant
    path is added by each sampling run, as observed (:mod:`nodes.run_context`)."""
    warnings = ("weights dequantise on the CPU: no GPU in use",) if loaded.patcher.load_device.type == "cpu" else ()
    if loaded.w8a8_note:
        warnings += (loaded.w8a8_note,)
    notes = (f"block linears {loaded.w8a8} W8A8 x{loaded.w8a8_layers}",) if loaded.w8a8 else ()
    return NodeStats(weight_types=loaded.source.type_counts(), resident_bytes=loaded.resident_weight_bytes,
                     notes=notes, warnings=warnings)
