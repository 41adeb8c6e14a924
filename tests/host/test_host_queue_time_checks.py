"""Checks that must happen when a graph is queued, not after everything upstream ran, and a step-cache profile the
host must not reuse stale.

The Calibrate node's profile name and the Texture & Colour cross-field rules (a min above its max, an even mask
size) used to raise only inside ``execute``; now ``POST /prompt`` answers 400 with a one-line message. The
TeaCache/MagCache nodes fingerprint their profile file, so after a recalibration under the same name the host
reruns them (and the sampler after them) instead of serving the cached output of the old profile.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.support.comfy_server import ComfyServer, PromptRejected
from tests.support.graphs import NODE, tiny_i2v_graph
from tests.support.tiny_models import write_random_image

STEPS = 8
TINY_PROFILE = Path(__file__).resolve().parents[1] / "data" / "step_cache_tiny_i2v_8steps.json"


def _with_node(graph: dict, class_type: str, inputs: dict) -> dict:
    """``graph`` with ``class_type`` between the model loader and the KSampler."""
    graph["20"] = {"class_type": class_type, "inputs": {"model": [NODE["model"], 0], **inputs}}
    graph[NODE["sampler"]]["inputs"]["model"] = ["20", 0]
    return graph


@pytest.mark.parametrize("name", ["../escape", "sub/dir", "", ".hidden", "a" * 101])
def test_a_bad_calibrate_profile_name_is_refused_at_queue_time(wan_pack: ComfyServer, name):
    graph = _with_node(tiny_i2v_graph(steps=STEPS, filename_prefix="latents/qt_cal"), "WanAccelStepCacheCalibrate",
                       {"profile_name": name, "fit_degree": 2})
    with pytest.raises(PromptRejected) as rejected:
        wan_pack.queue(graph)
    assert "HTTP 400" in str(rejected.value)
    message = f"profile_name {name!r} (Step Cache Calibrate): use 1-100 letters"
    assert message in str(rejected.value), str(rejected.value)


def _postprocess_graph(wan_pack: ComfyServer, tmp_path: Path, **overrides) -> dict:
    from wan_accel_kernels.postprocess import EnhanceParams

    image = wan_pack.add_input(write_random_image(tmp_path / "frame.png", 16, 16, seed=1))
    inputs = {"images": ["1", 0], "chunk_frames": 4, **asdict(EnhanceParams()), **overrides}
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "WanAccelTextureColourEnhance", "inputs": inputs},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


@pytest.mark.parametrize("overrides, message", [
    ({"cr_min": 180, "cr_max": 120}, "cr_min 180 is above cr_max 120: no colour would count as skin"),
    ({"cb_min": 128, "cb_max": 127}, "cb_min 128 is above cb_max 127"),
    ({"mask_morph_size": 4}, "mask_morph_size 4 is even; give an odd size"),
    ({"cr_max": 300}, "cr_max 300 is outside 0..255"),  # naming an int in validate_inputs keeps its range check
])
def test_texture_colour_cross_field_mistakes_are_refused_at_queue_time(wan_pack, tmp_path, overrides, message):
    with pytest.raises(PromptRejected) as rejected:
        wan_pack.queue(_postprocess_graph(wan_pack, tmp_path, **overrides))
    assert "HTTP 400" in str(rejected.value) and message in str(rejected.value), str(rejected.value)


def test_texture_colour_defaults_still_run(wan_pack, tmp_path):
    history = wan_pack.run(_postprocess_graph(wan_pack, tmp_path), timeout=300)
    assert history["status"]["status_str"] == "success"


def _tea_lines(comfy: ComfyServer) -> list[str]:
    return re.findall(r"TeaCache: computed \d+/\d+ steps, skipped \d+", comfy.log_text())


def test_a_changed_profile_file_makes_the_step_cache_node_rerun(wan_pack: ComfyServer):
    profile = wan_pack.models_dir / "wan_accel_step_cache" / "refreshed.json"
    profile.parent.mkdir(parents=True, exist_ok=True)
    profile.write_text(TINY_PROFILE.read_text())
    graph = _with_node(tiny_i2v_graph(steps=STEPS, seed=11, filename_prefix="latents/qt_refresh"), "WanAccelTeaCache",
                       {"model_type": "wan2.1_i2v_480p_14B", "profile": "refreshed.json", "rel_l1_thresh": 10.0,
                        "first_steps": 1, "last_steps": 1, "max_consecutive_skips": 100, "start_percent": 0.0,
                        "end_percent": 1.0, "cache_device": "compute"})
    runs = []
    for change in (None, None, "recalibrated", None):
        if change:  # same name, new content (a recalibration writes the file again)
            profile.write_text(json.dumps(json.loads(profile.read_text()), indent=1))
        before = len(_tea_lines(wan_pack))
        wan_pack.run(graph, timeout=600)
        runs.append(len(_tea_lines(wan_pack)) - before)
    print(f"\nsampling runs per queue (first, same file, changed file, same file): {runs}")
    assert runs == [1, 0, 1, 0]
