"""CFG schedule nodes on the real host: unconditional forwards == steps with cfg != 1, via the host's cfg-1 path.

In-process tests count the DiT forwards whose batch holds the unconditional pass (innermost DIFFUSION_MODEL
wrapper) on the tiny Wan 2.1 I2V DiT at 8 uni_pc steps, for the KSampler path (MODEL patch) and the
SamplerCustomAdvanced path (GUIDER). Graph tests run both nodes through the server.
"""
from __future__ import annotations

import re

import pytest
import torch

from wan_accel_kernels.step_cache import parse_cfg_schedule
from tests.support.comfy_server import ComfyServer, read_latent
from tests.support.graphs import NODE, tiny_i2v_graph
from tests.support.host_inprocess import import_pack_module
from tests.support.tiny_sampling import COUNTER_KEY, ForwardCounter, TinyWanSampler

STEPS = 8


@pytest.fixture(scope="module")
def tiny() -> TinyWanSampler:
    return TinyWanSampler()


@pytest.fixture(scope="module")
def nodes():
    return import_pack_module("nodes.cfg_schedule")


@pytest.fixture(scope="module")
def step_sigmas(tiny) -> list[float]:
    """The sigma of each of the 8 steps, as the DiT sees it."""
    counter = ForwardCounter()
    tiny.sample(steps=STEPS, counter=counter)
    return [f.sigma for f in counter.forwards]


@pytest.fixture(scope="module")
def stats():
    return import_pack_module("nodes.stats")


def scheduled(nodes, model, text: str):
    return nodes.CFGSchedule.execute(model, text).result[0]


def as_node(node_id: str):
    """Runs the block as node ``node_id`` of a prompt, so our nodes' reports reach the stats channel."""
    from comfy_execution.utils import CurrentNodeContext

    return CurrentNodeContext("cfg-schedule-test", node_id)


def reported_passes(stats, node_id: str) -> str:
    """The run's unconditional-pass line on node ``node_id``, as ``GET /wan_accel/stats`` serves it."""
    [line] = [line for line in stats.latest_stats()[node_id]["lines"] if line.startswith("uncond pass")]
    return line


@pytest.mark.parametrize("text, guided", [("3.0:2,1.0", 2), ("5:1,2.5:2,1", 3), ("1.0", 0), ("4.5", 8)])
def test_model_patch_runs_the_unconditional_pass_only_on_guided_steps(tiny, nodes, stats, step_sigmas, text,
                                                                     guided):
    counter = ForwardCounter()
    with as_node("20"):
        tiny.sample(scheduled(nodes, tiny.patcher, text), steps=STEPS, cfg=7.0, counter=counter)
    assert len(counter.forwards) == STEPS
    assert counter.uncond_forwards == guided
    assert reported_passes(stats, "20") == f"uncond pass on {guided} of {STEPS} predictions"
    uncond_steps = [step_sigmas.index(f.sigma) for f in counter.forwards if 1 in f.cond_or_uncond]
    expected = [i for i, cfg in enumerate(parse_cfg_schedule(text).per_step(STEPS)) if cfg != 1.0]
    assert uncond_steps == expected


def test_constant_schedules_reproduce_the_plain_sampler_exactly(tiny, nodes):
    assert torch.equal(tiny.sample(scheduled(nodes, tiny.patcher, "3.0"), steps=STEPS, cfg=1.0),
                       tiny.sample(steps=STEPS, cfg=3.0))
    assert torch.equal(tiny.sample(scheduled(nodes, tiny.patcher, "1.0"), steps=STEPS, cfg=5.0),
                       tiny.sample(steps=STEPS, cfg=1.0))


def test_the_schedule_changes_the_output_only_through_the_guided_steps(tiny, nodes):
    mixed = tiny.sample(scheduled(nodes, tiny.patcher, "3.0:2,1.0"), steps=STEPS)
    plain = tiny.sample(steps=STEPS, cfg=1.0)
    guided = tiny.sample(steps=STEPS, cfg=3.0)
    assert not torch.equal(mixed, plain) and not torch.equal(mixed, guided)


def test_the_host_can_still_disable_its_cfg1_optimisation(tiny, nodes, stats):
    with as_node("21"):
        model = scheduled(nodes, tiny.patcher, "3.0:2,1.0")
        model.model_options["disable_cfg1_optimization"] = True
        counter = ForwardCounter()
        tiny.sample(model, steps=STEPS, counter=counter)
    assert counter.uncond_forwards == STEPS
    assert reported_passes(stats, "21") == f"uncond pass on {STEPS} of {STEPS} predictions"


@pytest.mark.parametrize("text, guided", [("3.0:2,1.0", 2), ("6:1,1", 1)])
def test_guider_runs_the_unconditional_pass_only_on_guided_steps(tiny, nodes, stats, text, guided):
    import comfy.patcher_extension

    counter = ForwardCounter()
    model = tiny.patcher.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, COUNTER_KEY, counter)
    with as_node("22"):
        guider = nodes.CFGScheduleGuider.execute(model, tiny.positive, tiny.negative, text).result[0]
        tiny.sample_with_guider(guider, steps=STEPS)
    assert len(counter.forwards) == STEPS and counter.uncond_forwards == guided
    assert reported_passes(stats, "22") == f"uncond pass on {guided} of {STEPS} predictions"


def test_guider_with_a_constant_schedule_equals_the_core_cfg_guider(tiny, nodes):
    import comfy.samplers

    ours = nodes.CFGScheduleGuider.execute(tiny.patcher, tiny.positive, tiny.negative, "3.0").result[0]
    core = comfy.samplers.CFGGuider(tiny.patcher)
    core.set_conds(tiny.positive, tiny.negative)
    core.set_cfg(3.0)
    assert torch.equal(tiny.sample_with_guider(ours, steps=STEPS), tiny.sample_with_guider(core, steps=STEPS))


def test_a_bad_schedule_names_the_node_its_input_and_the_format(tiny, nodes):
    with pytest.raises(ValueError, match=r"CFG Schedule, input cfg_schedule: .*only the last entry"):
        nodes.CFGSchedule.execute(tiny.patcher, "3,1")


# ---------------------------------------------------------------------------------------------- graph tests

def schedule_lines(comfy: ComfyServer) -> list[str]:
    return re.findall(r"CFG schedule: .*", comfy.log_text())


def test_graph_ksampler_with_the_model_patch(wan_pack: ComfyServer):
    graph = tiny_i2v_graph(steps=STEPS, seed=7, cfg=1.0, filename_prefix="latents/cfg_patch")
    graph["30"] = {"class_type": "WanAccelCFGSchedule",
                   "inputs": {"model": [NODE["model"], 0], "cfg_schedule": "3.0:2,1.0"}}
    graph[NODE["sampler"]]["inputs"]["model"] = ["30", 0]
    before = len(schedule_lines(wan_pack))
    [path] = wan_pack.output_files(wan_pack.run(graph), "latents")
    assert torch.isfinite(read_latent(path)).all()
    assert schedule_lines(wan_pack)[before:] == [
        "CFG schedule: cfg 3 for steps 1-2, then 1 from step 3; unconditional pass on 2 of 8 steps"]


def test_graph_sampler_custom_advanced_with_the_guider(wan_pack: ComfyServer):
    graph = tiny_i2v_graph(steps=STEPS, seed=7, filename_prefix="latents/cfg_guider")
    del graph[NODE["sampler"]]
    graph.update({
        "31": {"class_type": "WanAccelCFGScheduleGuider",
               "inputs": {"model": [NODE["model"], 0], "positive": [NODE["positive"], 0],
                          "negative": [NODE["negative"], 0], "cfg_schedule": "5:1,1"}},
        "32": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "33": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "uni_pc"}},
        "34": {"class_type": "BasicScheduler",
               "inputs": {"model": [NODE["model"], 0], "scheduler": "simple", "steps": STEPS, "denoise": 1.0}},
        "35": {"class_type": "SamplerCustomAdvanced",
               "inputs": {"noise": ["32", 0], "guider": ["31", 0], "sampler": ["33", 0], "sigmas": ["34", 0],
                          "latent_image": [NODE["latent"], 0]}},
    })
    graph[NODE["save"]]["inputs"]["samples"] = ["35", 0]
    before = len(schedule_lines(wan_pack))
    [path] = wan_pack.output_files(wan_pack.run(graph), "latents")
    assert torch.isfinite(read_latent(path)).all()
    assert schedule_lines(wan_pack)[before:] == [
        "CFG schedule: cfg 5 for step 1, then 1 from step 2; unconditional pass on 1 of 8 steps"]
