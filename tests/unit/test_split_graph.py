"""Graph surgery of a split run (``wan_accel/split_graph.py``) on the shipped workflows, and the CLI's split checks
(``wan_accel/split_run.py``): which nodes each stage keeps, the two KSamplerAdvanced halves, the run key both ends
carry, and the refusals that name the fix."""
from __future__ import annotations

import pytest

from wan_accel.cli import build_parser, cmd_run
from wan_accel.errors import UsageError
from wan_accel.graph_fill import Overrides, fill, load_api_workflow
from wan_accel.split_graph import LAST_STEP, one_server_graph, split_graph
from wan_accel.split_run import TRANSFER_FORMATS
from wan_accel.workflow_catalog import WORKFLOWS
from wan_accel_kernels.latent_payload import FORMATS

WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
WAN22_REFERENCE = load_api_workflow(WORKFLOWS["wan22_reference"].api_path)


def classes(graph: dict) -> list[str]:
    return sorted(node["class_type"] for node in graph.values())


def test_winner_stage_a_samples_the_first_steps_and_exports_nothing_else():
    graphs = split_graph(fill(WINNER, Overrides(seed=5, steps=8)), 3, "int8")
    stage_a = graphs.stage_a
    assert "SaveVideo" not in classes(stage_a) and "WanAccelVAEDecode" not in classes(stage_a)
    sampler = stage_a["11"]["inputs"]
    assert stage_a["11"]["class_type"] == "KSamplerAdvanced"
    assert (sampler["add_noise"], sampler["start_at_step"], sampler["end_at_step"],
            sampler["return_with_leftover_noise"], sampler["noise_seed"], sampler["steps"]) == \
        ("enable", 0, 3, "enable", 5, 8)
    assert sampler["latent_image"] == ["10", 2] and sampler["model"] == ["3", 0]
    export = stage_a[graphs.export_id]
    assert export["class_type"] == "WanAccelExportLatent" and export["inputs"]["samples"] == ["11", 0]
    assert {k: export["inputs"][k] for k in ("transfer", "seed", "steps", "split_step")} == \
        {"transfer": "int8", "seed": 5, "steps": 8, "split_step": 3}


def test_winner_stage_b_imports_finishes_decodes_and_saves():
    graphs = split_graph(fill(WINNER, Overrides(seed=5, steps=8)), 3, "fp32")
    stage_b = graphs.stage_b
    assert "11" not in stage_b and "KSampler" not in classes(stage_b)
    [second] = [nid for nid, node in stage_b.items() if node["class_type"] == "KSamplerAdvanced"]
    sampler = stage_b[second]["inputs"]
    assert (sampler["add_noise"], sampler["start_at_step"], sampler["end_at_step"],
            sampler["return_with_leftover_noise"], sampler["noise_seed"]) == ("disable", 3, LAST_STEP, "disable", 5)
    assert sampler["latent_image"] == [graphs.import_id, 0]
    imported = stage_b[graphs.import_id]["inputs"]
    assert imported["like"] == ["10", 2] and (imported["seed"], imported["steps"], imported["split_step"]) == (5, 8, 3)
    assert stage_b["12"]["inputs"]["samples"] == [second, 0]   # the decode reads stage B's sampler
    for kept in ("WanAccelTextureColourEnhance", "SaveVideo", "WanImageToVideo", "WanAccelLoadDiTGGUF"):
        assert kept in classes(stage_b)   # stage B builds its own conditioning from the same inputs


def test_one_server_graph_chains_the_same_two_halves():
    filled = fill(WINNER, Overrides(seed=5, steps=8))
    chained, graphs = one_server_graph(filled, 3), split_graph(filled, 3, "fp32")
    [second] = [nid for nid, node in graphs.stage_b.items() if node["class_type"] == "KSamplerAdvanced"]
    assert chained["11"] == graphs.stage_a["11"]
    assert chained[second]["inputs"] == {**graphs.stage_b[second]["inputs"], "latent_image": ["11", 0]}
    assert "WanAccelExportLatent" not in classes(chained) and filled["11"]["class_type"] == "KSampler"


def test_wan22_host_pair_splits_at_its_switch_and_each_stage_loads_one_expert():
    graphs = split_graph(WAN22_REFERENCE, 2, "bf16")
    dits = {stage: sorted(node["inputs"]["unet_name"] for node in graph.values()
                          if node["class_type"] == "UNETLoader")
            for stage, graph in (("a", graphs.stage_a), ("b", graphs.stage_b))}
    assert len(dits["a"]) == len(dits["b"]) == 1 and "high_noise" in dits["a"][0] and "low_noise" in dits["b"][0]
    with pytest.raises(UsageError, match=r"--split-at 3: .* switches between its two KSamplerAdvanced at step 2; "
                                         r"split there \(--split-at 2\)"):
        split_graph(WAN22_REFERENCE, 3, "fp32")


@pytest.mark.parametrize("split_at", [0, 8, 9])
def test_a_split_outside_the_schedule_is_refused(split_at):
    with pytest.raises(UsageError, match=f"--split-at {split_at}: give a step from 1 to 7 .* runs 8 steps"):
        split_graph(WINNER, split_at, "fp32")


@pytest.mark.parametrize("steps, split_at, fix", [(8, 1, "give a step from 2 to 6"), (8, 7, "from 2 to 6"),
                                                   (3, 1, r"run 4 or more steps \(--steps 4\)")])
def test_uni_pc_is_refused_a_one_step_stage(steps, split_at, fix):
    with pytest.raises(UsageError, match=f"uni_pc needs 2 or more steps in each stage .* ignores the model.*{fix}"):
        split_graph(fill(WINNER, Overrides(steps=steps)), split_at, "fp32")
    euler = fill(WINNER, Overrides(steps=steps, settings={"11.sampler_name": "euler"}))
    assert split_graph(euler, split_at, "fp32").split_at == split_at


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
