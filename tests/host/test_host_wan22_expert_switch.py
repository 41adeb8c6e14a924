"""Wan 2.2 Expert Sampler on the real host, through ``POST /prompt`` on the tiny Wan 2.2 I2V expert pair.

* Its latent is bit-identical to the host's own two-``KSamplerAdvanced`` graph (high: add noise, steps 0..k, leftover
  noise returned; low: no noise, steps k..end) at the boundary switch and at a given step, with cfg > 1 on the
  high-noise expert and a sampler whose schedule drops a sigma (uni_pc).
* Step caches never carry a residual across the switch: with a cache on each expert that skips every step it is
  allowed to, a 2-step run switching after step 1 equals the uncached run exactly (each expert computes its first
  step), while the same cache on one model over the same 2 steps reuses step 0's residual and changes the output.
* The badges show steps computed/skipped per expert; a profile calibrated on one expert runs on it and is refused
  on the other with a message naming both experts.
"""
from __future__ import annotations

import pytest
import torch

from tests.support.comfy_server import ComfyServer, ExecutionFailed, read_latent
from tests.support.graphs import tiny_i2v_graph
from tests.support.tiny_wan22 import expert_file_name, write_tiny_wan22_expert
from tests.support.wan22_expert_graphs import NODE, expert_graph

GREEDY_CACHE = ("WanAccelMagCache", {
    "model_type": "wan2.1_i2v_480p_14B", "profile": "none", "magcache_thresh": 10.0, "magcache_K": 100,
    "retention_ratio": 0.0, "last_steps": 0, "cache_device": "compute"})
"""Skips every step after the first that it may: any reuse across the switch would show in the output."""


@pytest.fixture(scope="module")
def experts(wan_pack: ComfyServer) -> dict[str, tuple[str, dict]]:
    """The tiny high- and low-noise experts as host ``UNETLoader`` inputs."""
    loaders = {}
    for expert in ("high", "low"):
        name = wan_pack.add_model("diffusion_models", lambda p, e=expert: write_tiny_wan22_expert(p, e),
                                  expert_file_name(expert, ".safetensors"))
        loaders[expert] = ("UNETLoader", {"unet_name": name, "weight_dtype": "default"})
    return loaders


def latent_of(server: ComfyServer, graph: dict, prefix: str) -> tuple[torch.Tensor, dict]:
    graph[NODE["save"]]["inputs"]["filename_prefix"] = f"latents/{prefix}"
    history = server.run(graph, timeout=300)
    [path] = server.output_files(history, "latents")
    return read_latent(path), history


@pytest.mark.parametrize("settings", [
    dict(steps=4, switch_step=2, switch_at="boundary sigma", sampler_name="euler", cfg=(1.0, 1.0)),
    dict(steps=6, switch_step=3, switch_at="step", sampler_name="uni_pc", cfg=(2.5, 1.0)),
], ids=["boundary-euler-4", "step-uni_pc-6-cfg"])
def test_expert_sampler_is_bit_identical_to_the_hosts_two_sampler_graph(wan_pack, experts, settings):
    ours, history = latent_of(wan_pack, expert_graph(experts["high"], experts["low"], sampler="expert", seed=5,
                                                    **settings), "ours")
    host, _ = latent_of(wan_pack, expert_graph(experts["high"], experts["low"], sampler="host", seed=5,
                                              **settings), "host")
    assert ours.shape == host.shape == (1, 16, 2, 8, 8)
    assert torch.equal(ours, host)
    high_only, _ = latent_of(wan_pack, expert_graph(experts["high"], experts["high"], sampler="expert", seed=5,
                                                   **settings), "high_only")
    assert not torch.equal(high_only, ours)  # the low-noise expert really ran its steps
    text = history["outputs"][NODE["sampler"]]["text"][0]
    k = settings["switch_step"]
    assert f"high-noise expert steps 0-{k - 1}, low-noise expert steps {k}-{settings['steps'] - 1}" in text
    if settings["switch_at"] == "boundary sigma":
        assert text.startswith("sigmas 1.000 0.938 | 0.833 0.625 0.000;")  # shift 5: sigma 0.833 < 0.900


def test_step_caches_start_empty_for_each_expert(wan_pack, experts):
    two_steps = dict(steps=2, switch_step=1, switch_at="step", seed=9)
    plain, _ = latent_of(wan_pack, expert_graph(experts["high"], experts["low"], **two_steps), "plain")
    cached, history = latent_of(wan_pack, expert_graph(experts["high"], experts["low"], high_patch=GREEDY_CACHE,
                                                      low_patch=GREEDY_CACHE, **two_steps), "cached")
    assert torch.equal(cached, plain)  # the low-noise expert computed its first step: nothing crossed the switch
    stats = wan_pack.get_json("/wan_accel/stats")["nodes"]
    assert "high-noise expert: 1 computed · 0 skipped of 1 steps" in stats[NODE["sampler"]]["lines"]
    assert "low-noise expert: 1 computed · 0 skipped of 1 steps" in stats[NODE["sampler"]]["lines"]
    assert "MagCache (high-noise expert): 1 computed · 0 skipped" in stats[NODE["high_patch"]]["lines"]
    assert "MagCache (low-noise expert): 1 computed · 0 skipped" in stats[NODE["low_patch"]]["lines"]
    assert history["outputs"][NODE["sampler"]]["text"][0].count("computed") == 2

    one_model = tiny_i2v_graph(loader=experts["high"], steps=2, sampler_name="euler", seed=9)
    uncached_one, _ = _one_model_latent(wan_pack, one_model, "one_plain")
    one_model["40"] = {"class_type": GREEDY_CACHE[0], "inputs": {"model": ["1", 0], **GREEDY_CACHE[1]}}
    one_model["8"]["inputs"]["model"] = ["40", 0]
    cached_one, _ = _one_model_latent(wan_pack, one_model, "one_cached")
    assert not torch.equal(cached_one, uncached_one)  # within one run the same cache does reuse, and it shows



def test_longer_runs_skip_within_each_expert_and_report_it_per_expert(wan_pack, experts):
    four_steps = dict(steps=4, switch_step=2, switch_at="step", seed=9)
    latent_of(wan_pack, expert_graph(experts["high"], experts["low"], high_patch=GREEDY_CACHE,
                                    low_patch=GREEDY_CACHE, **four_steps), "skips")
    lines = wan_pack.get_json("/wan_accel/stats")["nodes"][NODE["sampler"]]["lines"]
    assert "high-noise expert: 1 computed · 1 skipped of 2 steps" in lines
    assert "low-noise expert: 1 computed · 1 skipped of 2 steps" in lines


def _one_model_latent(server: ComfyServer, graph: dict, prefix: str) -> tuple[torch.Tensor, dict]:
    graph["9"]["inputs"]["filename_prefix"] = f"latents/{prefix}"
    history = server.run(graph, timeout=300)
    [path] = server.output_files(history, "latents")
    return read_latent(path), history


def test_a_profile_of_one_expert_is_refused_on_the_other(wan_pack, experts):
    six_steps = dict(steps=6, switch_step=3, switch_at="step", seed=3)
    calibrate = ("WanAccelStepCacheCalibrate", {"profile_name": "wan22_tiny_high_noise", "fit_degree": 1})
    _, history = latent_of(wan_pack, expert_graph(experts["high"], experts["low"], high_patch=calibrate,
                                                 **six_steps), "calibrate")
    profile = wan_pack.models_dir / "wan_accel_step_cache" / "wan22_tiny_high_noise.json"
    assert '"expert": "high_noise"' in profile.read_text()
    with_profile = ("WanAccelMagCache", {"model_type": "wan2.1_i2v_480p_14B", "profile": profile.name,
                                         "magcache_thresh": 0.24, "magcache_K": 2, "retention_ratio": 0.2,
                                         "last_steps": 1, "cache_device": "compute"})
    latent_of(wan_pack, expert_graph(experts["high"], experts["low"], high_patch=with_profile, **six_steps), "right")
    with pytest.raises(ExecutionFailed) as refused:
        latent_of(wan_pack, expert_graph(experts["high"], experts["low"], low_patch=with_profile, **six_steps),
                  "wrong")
    message = str(refused.value)
    assert ("profile wan22_tiny_high_noise.json was calibrated on the high-noise expert and cannot be used on the "
            "low-noise expert") in message
