"""The shipped workflows (short name -> UI and API files) and the model files they need: loader input, folder, source."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = REPO_ROOT / "workflows"   # the folder the host serves as this pack's templates (UI format only)
API_DIR = WORKFLOW_DIR / "api"           # API-format twins, what the CLI queues


@dataclass(frozen=True)
class Workflow:
    """One shipped workflow: its short name on the command line, file stem and one-line summary."""

    name: str
    stem: str
    summary: str

    @property
    def ui_path(self) -> Path:
        """The editor (UI) format file, listed in the template browser."""
        return WORKFLOW_DIR / f"{self.stem}.json"

    @property
    def api_path(self) -> Path:
        """The API format file (``POST /prompt`` body) the CLI fills and queues."""
        return API_DIR / f"{self.stem}.api.json"


WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (
    Workflow("winner", "wan21_i2v_480p_winner",
             "the ACM MM 2025 I2V winner: Q6_K GGUF DiT, umt5 stored fp8, fp16 VAE, 832x480x81, uni_pc 8 steps cfg 1, "
             "texture and colour post-process, 16 fps video"),
    Workflow("turbo", "wan21_i2v_480p_turbo", "the winner plus the attention patch and the step cache"),
    Workflow("reference", "wan21_i2v_480p_reference",
             "host-native Wan 2.1 I2V (bf16 DiT, fp16 umt5, 40 uni_pc steps, cfg 5, shift 3): the quality and "
             "speed baseline"),
    Workflow("wan22_4step", "wan22_i2v_a14b_4step",
             "Wan 2.2 I2V A14B: both experts Q6_K GGUF, lightx2v 4-step LoRAs at 3.0 (high) / 1.0 (low), euler 4 "
             "steps cfg 1 split at sigma 0.900 by the Expert Sampler, attention patch, texture and colour, 832x480x81"),
    Workflow("wan22_turbo", "wan22_i2v_a14b_turbo", "Wan 2.2 4-step with both experts' block linears in int8 W8A8"),
    Workflow("wan22_reference", "wan22_i2v_a14b_reference",
             "Wan 2.2 I2V A14B with host nodes only, as the host's template (fp8_scaled experts, the same LoRAs and "
             "4 steps in two KSamplerAdvanced): the A/B baseline"),
)}

#: Loader inputs that name a model file: (class_type, input name) -> (role, models/ folder the host reads).
MODEL_INPUTS: dict[tuple[str, str], tuple[str, str]] = {
    ("WanAccelLoadDiTGGUF", "unet_name"): ("dit", "diffusion_models"),
    ("UNETLoader", "unet_name"): ("dit", "diffusion_models"),
    ("CLIPLoader", "clip_name"): ("text_encoder", "text_encoders"),
    ("WanAccelLoadTextEncoderFP8", "clip_name"): ("text_encoder", "text_encoders"),
    ("CLIPVisionLoader", "clip_name"): ("clip_vision", "clip_vision"),
    ("VAELoader", "vae_name"): ("vae", "vae"),
    ("WanAccelLoadVAE", "vae_name"): ("vae", "vae"),
    ("LoraLoaderModelOnly", "lora_name"): ("lora", "loras"),
}
ROLES = ("dit", "text_encoder", "clip_vision", "vae", "lora")

#: Folders under ComfyUI/models/ the host searches for each folder name (its folder_paths defaults).
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "clip_vision": ("clip_vision",),
    "vae": ("vae",),
    "loras": ("loras",),
}

_REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
_REPACKAGED_22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
_QUANTSTACK_22 = "https://huggingface.co/QuantStack/Wan2.2-I2V-A14B-GGUF/resolve/main"
#: Where to download each model file the shipped workflows name.
DOWNLOADS: dict[str, str] = {
    "wan2.1-i2v-14b-480p-Q6_K.gguf":
        "https://huggingface.co/city96/Wan2.1-I2V-14B-480P-gguf/resolve/main/wan2.1-i2v-14b-480p-Q6_K.gguf",
    "wan2.1_i2v_480p_14B_bf16.safetensors": f"{_REPACKAGED}/diffusion_models/wan2.1_i2v_480p_14B_bf16.safetensors",
    "umt5_xxl_fp16.safetensors": f"{_REPACKAGED}/text_encoders/umt5_xxl_fp16.safetensors",
    "clip_vision_h.safetensors": f"{_REPACKAGED}/clip_vision/clip_vision_h.safetensors",
    "wan_2.1_vae.safetensors": f"{_REPACKAGED}/vae/wan_2.1_vae.safetensors",
    "Wan2.2-I2V-A14B-HighNoise-Q6_K.gguf": f"{_QUANTSTACK_22}/HighNoise/Wan2.2-I2V-A14B-HighNoise-Q6_K.gguf",
    "Wan2.2-I2V-A14B-LowNoise-Q6_K.gguf": f"{_QUANTSTACK_22}/LowNoise/Wan2.2-I2V-A14B-LowNoise-Q6_K.gguf",
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors":
        f"{_REPACKAGED_22}/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors":
        f"{_REPACKAGED_22}/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
    "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors":
        f"{_REPACKAGED_22}/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
    "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors":
        f"{_REPACKAGED_22}/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": f"{_REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
}


@dataclass(frozen=True)
class ModelFileRef:
    """A model file named by one loader input of a graph."""

    node_id: str
    class_type: str
    input_name: str
    role: str
    folder: str
    file: str


def model_files(graph: Mapping[str, Any]) -> list[ModelFileRef]:
    """Every model file an API-format graph names, in node id order."""
    refs = []
    for node_id in sorted(graph, key=lambda k: (len(k), k)):
        node = graph[node_id]
        for input_name, value in node.get("inputs", {}).items():
            entry = MODEL_INPUTS.get((node.get("class_type", ""), input_name))
            if entry is not None and isinstance(value, str):
                refs.append(ModelFileRef(node_id, node["class_type"], input_name, entry[0], entry[1], value))
    return refs


def find_workflow(name_or_path: str) -> tuple[str, Path]:
    """(display name, API-format file) for a catalog name (``winner``, or its stem) or a path to an API JSON file."""
    for workflow in WORKFLOWS.values():
        if name_or_path in (workflow.name, workflow.stem):
            return workflow.stem, workflow.api_path
    path = Path(name_or_path)
    return path.stem, path
