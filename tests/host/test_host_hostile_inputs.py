"""Hostile values for our nodes' inputs, through POST /prompt and in process: nothing outside the model folders is
read, NaN and infinity never reach the numerics.

File names: every model-file input is checked against the dropdown's list (``nodes/model_files.py``) at queue time
and again before the file is opened. The targets are a marker file outside ``models/`` and ``/etc/passwd``, by
traversal and by absolute path; the reply must carry our message and none of the target's bytes. ComfyUI 0.3.64
queued these (``passwd is not a GGUF file (starts with b'root'...)``); 0.33 refused them with its own message.
Weights: "Load VAE (precision)" asks for a safe load itself, so a pickle that runs code is refused even where the
host's default is unsafe. Floats: NaN saturation used to give an all-black video with no error.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from tests.support import graphs
from tests.support.comfy_server import ComfyServerError, ExecutionFailed, PromptRejected
from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.tiny_models import write_random_image

MARKER = "WAN-ACCEL-HOSTILE-MARKER-5c1e9"
PASSWD_BYTES = "root:"  # the first bytes of /etc/passwd on any Linux


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A file outside every model folder holding ``MARKER`` (valid JSON, so a profile parser would accept it)."""
    path = tmp_path_factory.mktemp("outside_models") / "secret.json"
    path.write_text(json.dumps({"marker": MARKER, "steps": 8}), encoding="utf-8")
    return path


def hostile_names(models_dir: Path, folder: str, secret: Path) -> list[str]:
    """Traversal and absolute names of ``secret`` and /etc/passwd, as seen from ``models/<folder>``."""
    base = models_dir / folder
    return [os.path.relpath(secret, base), str(secret), "../" * 12 + "etc/passwd", "/etc/passwd"]


def _leaks(text: str) -> bool:
    return MARKER in text or PASSWD_BYTES in text


def _rejection_text(server, graph: dict) -> str:
    """Everything the host said about ``graph``: a 400 reply, or the failed execution's error and history."""
    try:
        history = server.run(graph, timeout=300)
    except PromptRejected as rejected:
        return f"{rejected} {json.dumps(rejected.error)} {json.dumps(rejected.node_errors)}"
    except ExecutionFailed as failed:
        return f"{failed} {json.dumps(failed.details, default=str)} {json.dumps(failed.history, default=str)}"
    raise AssertionError(f"the prompt was accepted and ran: {json.dumps(history)[:400]}")


def _vae_graph(vae_name: str) -> dict:
    return {"1": {"class_type": "WanAccelLoadVAE", "inputs": {"vae_name": vae_name, "precision": "fp32"}},
            "2": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": 16, "height": 16, "length": 1, "batch_size": 1}},
            "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


def _step_cache_graph(node: str, profile: str, **floats: float) -> dict:
    """The tiny i2v graph with TeaCache or MagCache between the host's UNETLoader and the KSampler."""
    graph = graphs.tiny_i2v_graph()
    class_type, inputs = graphs.unet_loader()
    graph["10"] = {"class_type": class_type, "inputs": inputs}
    if node == "WanAccelTeaCache":
        inputs = {"model_type": "wan2.1_i2v_480p_14B", "rel_l1_thresh": 0.3, "first_steps": 1, "last_steps": 1,
                  "max_consecutive_skips": 3, "start_percent": 0.0, "end_percent": 1.0}
    else:
        inputs = {"model_type": "wan2.1_i2v_480p_14B", "magcache_thresh": 0.24, "magcache_K": 2,
                  "retention_ratio": 0.2, "last_steps": 1}
    graph[graphs.NODE["model"]] = {"class_type": node, "inputs": {
        **inputs, **floats, "model": ["10", 0], "profile": profile, "cache_device": "compute"}}
    return graph


def _text_encoder_graph(clip_name: str) -> dict:
    graph = graphs.tiny_i2v_graph()
    graph[graphs.NODE["clip"]] = {"class_type": "WanAccelLoadTextEncoderFP8",
                                  "inputs": {"clip_name": clip_name, "device": "cpu", "scaling": "per_row"}}
    return graph


def _prompt_cache_graph(clip_name: str) -> dict:
    graph = graphs.tiny_i2v_graph()
    graph[graphs.NODE["positive"]] = {"class_type": "WanAccelEncodePromptCached", "inputs": {
        "clip_name": clip_name, "text": "a cat", "device": "cpu", "scaling": "per_row", "min_length": 0,
        "min_padding": 0, "cache_limit_mb": 64}}
    return graph


GRAPHS = {  # input -> (folder, graph builder)
    "WanAccelLoadDiTGGUF.unet_name": ("diffusion_models", lambda name: graphs.tiny_i2v_graph(
        loader=("WanAccelLoadDiTGGUF", {"unet_name": name, "compute_dtype": "auto"}))),
    "WanAccelLoadVAE.vae_name": ("vae", _vae_graph),
    "WanAccelTeaCache.profile": ("wan_accel_step_cache", lambda name: _step_cache_graph("WanAccelTeaCache", name)),
    "WanAccelMagCache.profile": ("wan_accel_step_cache", lambda name: _step_cache_graph("WanAccelMagCache", name)),
    "WanAccelLoadTextEncoderFP8.clip_name": ("text_encoders", _text_encoder_graph),
    "WanAccelEncodePromptCached.clip_name": ("text_encoders", _prompt_cache_graph),
}


@pytest.mark.parametrize("node_input", list(GRAPHS))
def test_names_outside_the_model_folder_are_refused_without_reading(wan_pack, secret, node_input):
    folder, build = GRAPHS[node_input]
    input_name = node_input.split(".")[1]
    for name in hostile_names(wan_pack.models_dir, folder, secret):
        text = _rejection_text(wan_pack, build(name))
        assert f"{input_name} {name!r} is not a file in models/{folder}; pick one from the list" in text, text[:2000]
        assert not _leaks(text), f"{node_input}={name!r}: the reply holds the target's bytes: {text[:2000]}"


def test_a_pickle_uploaded_as_an_input_is_not_reachable_from_the_vae_loader(wan_pack, tmp_path):
    """The review's route: upload a .pt through input/, then name it from models/vae."""
    uploaded = wan_pack.add_input(_write_code_running_pickle(tmp_path / "evil.pt", tmp_path / "ran"))
    name = os.path.relpath(wan_pack.input_dir / uploaded, wan_pack.models_dir / "vae")
    text = _rejection_text(wan_pack, _vae_graph(name))
    assert f"vae_name {name!r} is not a file in models/vae" in text
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("field, value", [("saturation", math.nan), ("contrast", math.nan),
                                          ("saturation", math.inf), ("contrast", -math.inf)])
def test_texture_colour_refuses_nan_and_infinity_at_queue_time(wan_pack, tmp_path, field, value):
    image = wan_pack.add_input(write_random_image(tmp_path / "frame.png", 16, 16, seed=1))
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
             "2": {"class_type": "WanAccelTextureColourEnhance", "inputs": {"images": ["1", 0], "chunk_frames": 4,
                                                                            **_postprocess_defaults(), field: value}},
             "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(PromptRejected) as rejected:
        wan_pack.queue(graph)
    assert f"{field} is {value!r}, not a finite number; give a number from 0 to 2" in str(rejected.value)
    graph["2"]["inputs"][field] = 2.5  # naming the input in validate_inputs keeps the range check
    with pytest.raises(PromptRejected, match=rf"{field} 2.5 is outside 0..2"):
        wan_pack.queue(graph)


@pytest.mark.parametrize("node, field", [("WanAccelTeaCache", "rel_l1_thresh"), ("WanAccelTeaCache", "end_percent"),
                                         ("WanAccelMagCache", "magcache_thresh")])
def test_step_cache_refuses_nan_thresholds_at_queue_time(wan_pack, node, field):
    with pytest.raises(PromptRejected, match=rf"{field} is nan, not a finite number"):
        wan_pack.queue(_step_cache_graph(node, "none", **{field: math.nan}))


def _postprocess_defaults() -> dict:
    from dataclasses import asdict

    from wan_accel_kernels.postprocess import EnhanceParams
    return asdict(EnhanceParams())


class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: what a hostile checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _write_code_running_pickle(path: Path, marker: Path) -> Path:
    torch.save({"decoder.conv1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    return path


# ---------------------------------------------------------------- in process: the node code paths themselves

@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A vae folder registered with the host, holding one listed file."""
    import_host()
    import folder_paths

    folder = tmp_path_factory.mktemp("hostile_vae")
    (folder / "listed.safetensors").write_bytes(b"not read by these tests")
    folder_paths.add_model_folder_path("vae", str(folder))
    return folder


def test_the_vae_loader_asks_for_a_safe_load_whatever_the_host_default(model_folder, tmp_path, monkeypatch):
    import comfy.utils

    loader = import_pack_module("nodes.vae_loader")
    # 0.3.64 unpickles freely unless ALWAYS_SAFE_LOAD (torch >= 2.4) or safe_load; 0.33 always loads weights only
    monkeypatch.setattr(comfy.utils, "ALWAYS_SAFE_LOAD", False, raising=False)
    marker = tmp_path / "code_ran"
    path = _write_code_running_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match=r"evil\.pt holds more than weights .*use a \.safetensors VAE"):
        loader.load_vae(str(path), "fp32")
    assert not marker.exists()


def test_resolve_refuses_before_opening_and_accepts_the_listed_file(model_folder, secret):
    import folder_paths

    model_files = import_pack_module("nodes.model_files")
    spec = model_files.ModelFileInput("vae_name", "vae", frozenset({".safetensors"}))
    assert "listed.safetensors" in spec.options()
    assert spec.resolve("listed.safetensors") == folder_paths.get_full_path_or_raise("vae", "listed.safetensors")
    assert spec.validate("listed.safetensors") is True and spec.validate(None) is True  # None: a link, run-time check
    outside = os.path.relpath(secret, model_folder)
    for name in (outside, str(secret), "/etc/passwd", "sub/../listed.safetensors", "listed.pt", "", 7, ["x"]):
        with pytest.raises(ValueError) as caught:
            spec.resolve(name)
        assert str(caught.value) == spec.validate(name)
        assert str(caught.value).startswith(f"vae_name {name!r} is not a file in models/vae; pick one from the list "
                                            "or put the .safetensors file there")
    assert len(spec.problem("x" * 10_000)) < 300  # a huge name is not echoed whole


@pytest.mark.parametrize("module, node, input_name", [
    ("nodes.gguf_loader", "LoadWanDiTGGUF", "unet_name"),
    ("nodes.vae_loader", "LoadVAEPrecision", "vae_name"),
    ("nodes.text_encoder_fp8", "LoadTextEncoderFP8", "clip_name"),
    ("nodes.prompt_cache_encode", "EncodePromptCached", "clip_name"),
    ("nodes.image_encoder_cache", "CLIPVisionEncodeCached", "clip_name"),
    ("nodes.step_cache", "WanTeaCache", "profile"),
    ("nodes.step_cache", "WanMagCache", "profile"),
])
def test_every_model_file_input_validates_its_name(module, node, input_name):
    node_class = getattr(import_pack_module(module), node)
    answer = node_class.validate_inputs(**{input_name: "../../../../etc/passwd"})
    assert isinstance(answer, str) and answer.startswith(f"{input_name} '../../../../etc/passwd' is not a file in")
