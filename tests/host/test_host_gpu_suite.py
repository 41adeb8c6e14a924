"""The GPU suite's dry run with the host imported in-process (``COMFYUI_PATH``): every section runs at tiny size
(dim 256, 1 layer, 32x32x5) in fp32, labelled so, within its budget, and reports finite numbers in the layout the
GPU run writes: the W8A8 rows through the shipped layer, the projection per configuration from its own linears.
A host-tier test because the DiT, linear and VAE sections build the host's own models;
tests/unit/test_gpu_suite.py covers the rest."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["unit_tests", "dit", "linears", "attention", "vae", "postprocess", "text_encoder", "wan22",
            "wan22_steps", "projection"]
DRY_RUN_TIMEOUT_S = 240  # the dry run's own bound is its 180 s budget plus start-up; ~45 s alone on 2 cores
LINEAR_COUNTS = {"[256, 256]": 6, "[512, 256]": 1, "[256, 512]": 1}  # per forward at dim 256, ffn 512, 1 layer
DIM, LAYERS, CLIP_DIM = 256, 1, 1280


def image_branch_parameters(dim: int, layers: int) -> int:
    """What a Wan 2.2 expert lacks against the Wan 2.1 I2V DiT: ``img_emb`` (LayerNorm 1280, Linear 1280->1280,
    Linear 1280->dim, LayerNorm dim) and per block the image cross-attention's k_img, v_img and norm_k_img."""
    img_emb = 2 * CLIP_DIM + (CLIP_DIM * CLIP_DIM + CLIP_DIM) + (CLIP_DIM * dim + dim) + 2 * dim
    return img_emb + layers * (2 * (dim * dim + dim) + dim)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_suite")
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--dry-run", "--out", str(out)], cwd=REPO_ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text()


def test_dry_run_with_the_host_runs_every_section_in_fp32(suite):
    report, markdown = suite
    sections = {s["name"]: s for s in report["sections"]}
    assert list(sections) == SECTIONS
    assert {name: (s["status"], s["reason"]) for name, s in sections.items()} == dict.fromkeys(SECTIONS, ("ok", "")), \
        markdown
    assert report["elapsed_s"] < report["budget_s"] == 180 and report["section_limit_s"] == 45
    dit = {row["configuration"]: row for row in sections["dit"]["rows"]}
    assert {row["dtype"] for row in dit.values()} == {"fp32"}  # not bf16 on a CPU, and labelled so
    vae = sections["vae"]["rows"]
    assert [(r["measures"], r["dtype"], r["operation"]) for r in vae] == [
        ("fp16", "fp32", "encode"), ("fp16", "fp32", "host decode"), ("fp16", "fp32", "frame-by-frame decode")]
    assert vae[-1]["bit_identical_to_host"] is True and vae[-1]["estimate_gib"] > 0
    assert "1x2x8x128 fp32" in sections["attention"]["notes"][0]


def test_dit_rows_measure_what_they_say(suite):
    report, _ = suite
    dit = {row["configuration"]: row for row in next(s for s in report["sections"] if s["name"] == "dit")["rows"]}
    reference = dit["host bf16 + SDPA"]
    assert reference["cosine"] > 1 - 1e-12 and reference["vs_bf16"] == 1.0
    for name in ("our exact torch dequant + SDPA", "ours: Triton dequant + SDPA"):
        assert dit[name]["rel_l2"] < 1e-5  # the same weights dequantised exactly, all in fp32
    style = dit["ComfyUI-GGUF style (fp16 block math) + SDPA"]
    assert 1e-5 < style["rel_l2"] < 0.01 and style["cosine"] > 0.999  # fp16 block math: close, not exact
    assert all(row["status"] == "ok" for name, row in dit.items() if "Sage" not in name)
    int8, fp8 = dit["W8A8 int8 + SDPA"], dit["W8A8 fp8 + SDPA"]  # the shipped layer, nodes/w8a8_ops.py
    assert (int8["arithmetic"], fp8["arithmetic"]) == ("int8", "fp8")
    assert 1e-4 < int8["rel_l2"] < 0.05 and 1e-4 < fp8["rel_l2"] < 0.1  # 8-bit error: present, bounded
    assert int8["weights_gib"] < 0.6 * reference["weights_gib"]  # packed 8-bit bytes, not a 16/32-bit copy


def test_wan22_steps_time_each_expert_in_the_no_img_emb_layout(suite):
    report, markdown = suite
    sections = {s["name"]: s for s in report["sections"]}
    experts = sections["wan22_steps"]["rows"]
    assert [(r["expert"], r["status"], r["dtype"], r["attention"]) for r in experts] == [
        ("high noise", "ok", "fp32", "sdpa"), ("low noise", "ok", "fp32", "sdpa")]
    assert all(r["s_per_step"] > 0 and r["first_call_s"] >= r["s_per_step"] for r in experts)
    assert all(r["wan21_i2v_parameters"] - r["parameters"] == image_branch_parameters(DIM, LAYERS) for r in experts)
    gguf = next(r for r in sections["dit"]["rows"] if r["configuration"] == "ours: Triton dequant + SDPA")
    assert all(r["weights_gib"] < gguf["weights_gib"] for r in experts)  # the same DiT less its image branch
    notes = sections["wan22_steps"]["notes"]
    assert any(note.startswith("a 4-step video's DiT on this GPU (2 steps per expert + one pageable switch)")
               for note in notes)
    assert "## Wan 2.2: one DiT step of each expert at 14B shapes" in markdown


def test_linears_give_the_projection_a_time_per_arithmetic(suite):
    report, _ = suite
    sections = {s["name"]: s for s in report["sections"]}
    linears = sections["linears"]["rows"]
    assert any(r["path"].startswith("fused Q6_K matmul") and r["status"] == "ok" for r in linears)
    assert {r["arithmetic"] for r in linears if "arithmetic" in r} == {"bf16", "int8", "fp8"}
    shipped = [r for r in linears if "(the shipped layer's call)" in r["path"]]
    assert len(shipped) == 6 and all(r["status"] == "ok" and r["rel_l2"] < 0.1 for r in shipped)
    per_forward = {arithmetic: sum(r["ms"] / 1e3 * LINEAR_COUNTS[r["weight"]] for r in linears
                                   if r.get("arithmetic") == arithmetic) for arithmetic in ("bf16", "int8", "fp8")}
    projected = {r["configuration"]: r for r in sections["projection"]["rows"]}
    dit = [r for r in sections["dit"]["rows"] if r["status"] == "ok"]
    assert set(projected) == {r["configuration"] for r in dit}
    for row in dit:
        assert projected[row["configuration"]]["measured_linear_s"] == pytest.approx(per_forward[row["arithmetic"]])
    assert projected["W8A8 int8 + SDPA"]["measured_linear_s"] != projected["host bf16 + SDPA"]["measured_linear_s"]


def test_the_projection_is_a_labelled_range(suite):
    report, markdown = suite
    projection = next(s for s in report["sections"] if s["name"] == "projection")
    assert projection["rows"] and all(r["status"] == "ok" for r in projection["rows"])
    assert all(0 < r["projected_4090_video_fast_s"] < r["projected_4090_video_slow_s"] for r in projection["rows"])
    assert all(math.isfinite(r["measured_s_per_step"]) for r in projection["rows"])
    assert "a projection from datasheet ratios, not a 4090 measurement" in markdown
    assert "(dry run: a stand-in spec and CPU fp32 times; these numbers mean nothing)" in projection["notes"][0]
