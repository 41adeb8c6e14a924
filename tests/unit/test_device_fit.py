"""Doctor and run flag the settings a CPU-only ComfyUI cannot run usefully (the winner's fp16 VAE: ~22 s a frame),
each with the ``--set`` that fixes it; a GPU server, or the fixed settings, get no warning."""
from __future__ import annotations

import copy

import pytest

from wan_accel.device_fit import cpu_only, cpu_warnings
from wan_accel.doctor import workflow_lines
from wan_accel.graph_fill import Overrides, fill, load_api_workflow
from wan_accel.workflow_catalog import WORKFLOWS

WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
VAE_FIX = ("#9 Load Wan VAE (fp16): precision=fp16 on a CPU-only server: fp16 convolutions have no fast CPU kernels: "
           "the decode takes ~22 s per frame (fp32 ~15x faster) -> use --set 9.precision=fp32")


def test_cpu_only_reads_the_servers_devices():
    assert cpu_only({"devices": [{"name": "cpu", "type": "cpu"}]}) is True
    assert cpu_only({"devices": [{"name": "cuda:0 NVIDIA H100", "type": "cuda"}]}) is False
    assert cpu_only({"devices": []}) is None and cpu_only({}) is None


@pytest.mark.parametrize("name", ["winner", "turbo"])
def test_the_shipped_fp16_vae_is_flagged_with_its_fix(name):
    graph = load_api_workflow(WORKFLOWS[name].api_path)
    assert cpu_warnings(graph) == [VAE_FIX]   # turbo's int8 W8A8 and auto attention run on a CPU: not flagged


def test_the_reference_workflow_has_nothing_to_flag():
    assert cpu_warnings(load_api_workflow(WORKFLOWS["reference"].api_path)) == []


def test_the_suggested_set_clears_the_warning():
    fixed = fill(WINNER, Overrides(settings={"9.precision": "fp32"}))
    assert cpu_warnings(fixed) == []
    assert cpu_warnings(fill(WINNER, Overrides(settings={"9.precision": "bf16"}))) == []   # ~2x on a CPU: usable


def test_fp16_dit_compute_fp8_w8a8_and_sage_attention_are_flagged():
    turbo = load_api_workflow(WORKFLOWS["turbo"].api_path)
    graph = fill(turbo, Overrides(settings={"9.precision": "fp32", "2.compute_dtype": "fp16", "2.compute": "fp8 W8A8",
                                            "16.backend": "sageattn_qk_int8_pv_fp16_cuda"}))
    fixes = [line.rsplit(" -> ", 1)[1] for line in cpu_warnings(graph)]
    assert fixes == ["use --set 2.compute_dtype=auto", "use --set 2.compute=int8 W8A8", "use --set 16.backend=sdpa"]


def test_a_node_without_inputs_is_skipped():
    graph = copy.deepcopy(WINNER)
    graph["9"] = {"class_type": "WanAccelLoadVAE"}
    assert cpu_warnings(graph) == []


def test_doctor_lists_the_fixes_under_each_workflow_only_on_a_cpu(tmp_path):
    on_cpu = workflow_lines(None, tmp_path, cpu=True)
    start = on_cpu.index("winner (wan21_i2v_480p_winner.json): 4 problem(s)")
    assert on_cpu[start + 5] == f"  [no GPU]  {VAE_FIX}"
    assert sum("[no GPU]" in line for line in on_cpu) == 4   # the fp16 VAE of winner, turbo, wan22_4step, wan22_turbo
    assert not any("[no GPU]" in line for line in workflow_lines(None, tmp_path, cpu=False))
    assert not any("[no GPU]" in line for line in workflow_lines(None, tmp_path))   # device unknown
