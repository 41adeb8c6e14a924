"""Graph surgery of a split run (``wan_accel/split_graph.py``) on the shipped workflows, and the CLI's split checks
(``wan_accel/split_run.py``): which nodes each stage keeps, the Split Sampler pair a KSampler becomes, the
Export/Import pair of the host's two KSamplerAdvanced, the run key both ends carry, and the refusals that name the
fix."""
from __future__ import annotations

import pytest

from wan_accel.cli import build_parser, cmd_run
from wan_accel.errors import UsageError
from wan_accel.graph_fill import Overrides, fill, load_api_workflow
from wan_accel.split_graph import split_graph
from wan_accel.split_run import TRANSFER_FORMATS
from wan_accel.workflow_catalog import WORKFLOWS
from wan_accel_kernels.latent_payload import FORMATS

WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
WAN22_REFERENCE = load_api_workflow(WORKFLOWS["wan22_reference"].api_path)


def classes(graph: dict) -> list[str]:
    return sorted(node["class_type"] for node in graph.values())


def test_winner_stage_a_is_the_split_sampler_over_the_whole_schedule_and_nothing_after():
    filled = fill(WINNER, Overrides(seed=5, steps=8))
    graphs = split_graph(filled, 3, "int8")
    stage_a = graphs.stage_a
    assert "SaveVideo" not in classes(stage_a) and "WanAccelVAEDecode" not in classes(stage_a)
    assert graphs.export_id == "11" and stage_a["11"]["class_type"] == "WanAccelSplitSamplerA"
    sampler, ksampler = stage_a["11"]["inputs"], filled["11"]["inputs"]
    for name in ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                 "latent_image"):
        assert sampler[name] == ksampler[name]   # the KSampler's own settings: the same schedule, seed and noise
    assert (sampler["seed"], sampler["steps"], sampler["split_step"], sampler["transfer"]) == (5, 8, 3, "int8")
    assert "denoise" not in sampler and "KSamplerAdvanced" not in classes(stage_a)


def test_winner_stage_b_replays_finishes_decodes_and_saves():
    filled = fill(WINNER, Overrides(seed=5, steps=8))
    graphs = split_graph(filled, 3, "fp32")
    stage_b = graphs.stage_b
    assert graphs.import_id == "11" and stage_b["11"]["class_type"] == "WanAccelSplitSamplerB"
    sampler = stage_b["11"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["split_step"], sampler["payload"]) == (5, 8, 3, "")
    assert sampler["latent_image"] == ["10", 2] and sampler["model"] == filled["11"]["inputs"]["model"]
    assert stage_b["12"]["inputs"]["samples"] == ["11", 0]   # the decode reads stage B's sampler
    assert set(stage_b) == set(filled)   # every node of the workflow, the sampler swapped
    for kept in ("WanAccelTextureColourEnhance", "SaveVideo", "WanImageToVideo", "WanAccelLoadDiTGGUF"):
        assert kept in classes(stage_b)   # stage B builds its own conditioning from the same inputs
    assert filled["11"]["class_type"] == "KSampler"   # the workflow itself is left as it was


def test_wan22_host_pair_splits_at_its_switch_and_each_stage_loads_one_expert():
    graphs = split_graph(WAN22_REFERENCE, 2, "bf16")
    dits = {stage: sorted(node["inputs"]["unet_name"] for node in graph.values()
                          if node["class_type"] == "UNETLoader")
            for stage, graph in (("a", graphs.stage_a), ("b", graphs.stage_b))}
    assert len(dits["a"]) == len(dits["b"]) == 1 and "high_noise" in dits["a"][0] and "low_noise" in dits["b"][0]
    export, imported = graphs.stage_a[graphs.export_id], graphs.stage_b[graphs.import_id]
    [first] = [nid for nid, node in graphs.stage_a.items() if node["class_type"] == "KSamplerAdvanced"]
    [second] = [nid for nid, node in graphs.stage_b.items() if node["class_type"] == "KSamplerAdvanced"]
    assert export["class_type"] == "WanAccelExportLatent" and export["inputs"]["samples"] == [first, 0]
    assert imported["class_type"] == "WanAccelImportLatent" and export["inputs"]["transfer"] == "bf16"
    assert graphs.stage_b[second]["inputs"]["latent_image"] == [graphs.import_id, 0]
    assert (imported["inputs"]["split_step"], graphs.stage_b[second]["inputs"]["start_at_step"]) == (2, 2)
    with pytest.raises(UsageError, match=r"--split-at 3: .* switches between its two KSamplerAdvanced at step 2; "
                                         r"split there \(--split-at 2\)"):
        split_graph(WAN22_REFERENCE, 3, "fp32")


@pytest.mark.parametrize("split_at", [0, 8, 9])
def test_a_split_outside_the_schedule_is_refused(split_at):
    with pytest.raises(UsageError, match=f"--split-at {split_at}: give a step from 1 to 7 .* runs 8 steps"):
        split_graph(WINNER, split_at, "fp32")


@pytest.mark.parametrize("steps, split_at", [(8, 1), (8, 7), (3, 1), (2, 1)])
def test_uni_pc_splits_at_any_step_since_stage_b_replays_its_history(steps, split_at):
    graphs = split_graph(fill(WINNER, Overrides(steps=steps)), split_at, "fp32")
    assert graphs.stage_b["11"]["inputs"]["sampler_name"] == "uni_pc"
    assert (graphs.steps, graphs.split_at) == (steps, split_at)


def test_workflows_the_split_does_not_cover_are_refused_with_the_alternative():
    with pytest.raises(UsageError, match="samples with WanAccelExpertSampler .* --workflow wan22_reference"):
        split_graph(load_api_workflow(WORKFLOWS["wan22_4step"].api_path), 2, "fp32")
    partial = fill(WINNER, Overrides(settings={"11.denoise": 0.6}))
    with pytest.raises(UsageError, match=r"denoise at 1.0 \(node #11 has 0.6\)"):
        split_graph(partial, 3, "fp32")


def test_the_clients_format_list_is_the_payloads():
    assert TRANSFER_FORMATS == FORMATS


@pytest.mark.parametrize("extra, message", [
    (["--server", "http://127.0.0.1:1", "--server", "http://127.0.0.1:2"], "2 --server addresses: a run uses one, "
                                                                           "or two with --split-at K"),
    (["--split-at", "2", "--server", "http://127.0.0.1:1"], "--split-at needs two servers, --server A --server B "
                                                            "(got 1)"),
    (["--split-at", "2", "--comfyui", "/nowhere"], "--split-at runs on two running servers"),
])
def test_the_cli_refuses_a_split_without_two_servers(extra, message, tmp_path):
    args = build_parser().parse_args(["run", "--image", str(tmp_path / "x.png"), "--prompt", "p", *extra])
    with pytest.raises(UsageError) as refused:
        cmd_run(args)
    assert message in str(refused.value)
