"""The GPU suite's harness on CPU: ``--dry-run`` writes the JSON and markdown layout with every section named,
host sections skipped with the reason when ``COMFYUI_PATH`` is unset (tests/host/test_host_gpu_suite.py runs them),
the budget skips what does not fit, and the benchmark helpers it relies on (GPU names, 4090 projection, the
ComfyUI-GGUF style dequantisation) compute what they say."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import projection_4090 as projection  # noqa: E402
from gguf_style import dequantize_q6_k_fp16  # noqa: E402
from gpu_specs import RTX_4090, spec_for  # noqa: E402
from wan14b_models import random_q6_k  # noqa: E402

from wan_accel_kernels.gguf import dequantize  # noqa: E402

SECTIONS = ["unit_tests", "dit", "linears", "attention", "vae", "postprocess", "text_encoder", "projection"]
HOST_SECTIONS = {"dit", "linears", "vae"}


def run_suite(out: Path, *flags: str, comfyui: str | None = None, timeout: int = 600) -> tuple[dict, str]:
    """Runs ``benchmarks/gpu_suite.py --dry-run`` in a child process; returns (the JSON, the markdown)."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    if comfyui:
        env["COMFYUI_PATH"] = comfyui
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out",
                           str(out), *flags], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text())


def numbers(value) -> list[float]:
    """Every number inside a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


def check_layout(report: dict, markdown: str) -> dict:
    """The layout shared by every run; returns the sections by name."""
    assert report["dry_run"] is True
    assert {k: report["shape"][k] for k in ("dim", "layers", "frames", "height", "width")} == dict(
        dim=256, layers=2, frames=5, height=64, width=64)
    assert [s["name"] for s in report["sections"]] == SECTIONS
    assert all(math.isfinite(n) for n in numbers(report))
    for section in report["sections"]:
        assert set(section) == {"name", "title", "estimate_s", "seconds", "status", "reason", "rows", "notes"}
        assert section["status"] in ("ok", "skipped", "failed")
        assert (section["status"] == "ok") == (section["reason"] == "")
        line = next(l for l in markdown.splitlines() if l.startswith(f"| {section['name']} |"))
        assert f"| {section['status']} |" in line and section["reason"].replace("|", "/") in line
        if section["status"] == "ok":
            assert section["rows"] and f"## {section['title']}" in markdown
    return {s["name"]: s for s in report["sections"]}


@pytest.fixture(scope="module")
def no_host(tmp_path_factory) -> tuple[dict, str]:
    return run_suite(tmp_path_factory.mktemp("suite"))


def test_dry_run_without_the_host_names_the_host_sections_as_skipped(no_host):
    sections = check_layout(*no_host)
    for name in HOST_SECTIONS:
        assert sections[name]["status"] == "skipped"
        assert "COMFYUI_PATH is not set" in sections[name]["reason"]
    assert "needs the dit_rows, linear_s measurements" in sections["projection"]["reason"]
    assert {name for name, s in sections.items() if s["status"] == "ok"} == {
        "unit_tests", "attention", "postprocess", "text_encoder"}


def test_dry_run_sections_measure_what_they_say(no_host):
    sections = check_layout(*no_host)
    tests = sections["unit_tests"]["rows"]
    assert sum(r["passed"] for r in tests) > 0 and sum(r["failed"] + r["errors"] for r in tests) == 0
    sdpa = next(r for r in sections["attention"]["rows"] if r["kind"] == "sdpa")
    assert sdpa["ms"] > 0 and sdpa["vs_sdpa"] == 1.0 and sdpa["cosine"] > 0.999
    placements = sections["postprocess"]["rows"]
    assert len(placements) == 3 and all(r["max_abs_diff_vs_cpu"] == 0.0 for r in placements)  # CPU: identical
    encode = sections["text_encoder"]["rows"][-1]
    assert 0.5 < encode["fp8_weights_mib"] / encode["bf16_weights_mib"] < 0.52  # 1 byte vs 2, plus row scales


def test_a_budget_too_small_skips_every_section_with_its_estimate(tmp_path):
    report, markdown = run_suite(tmp_path, "--budget-s", "0.5", timeout=120)
    sections = check_layout(report, markdown)
    for section in sections.values():
        assert section["status"] == "skipped" and section["seconds"] is None
        assert section["reason"].startswith(f"needs ~{section['estimate_s']:.0f} s")


def test_gpu_names_match_exactly():
    assert spec_for("NVIDIA H100 PCIe").label == "H100 PCIe"
    assert spec_for("NVIDIA H100 80GB HBM3").label == "H100 SXM"
    assert spec_for("NVIDIA H100 PCIe").bandwidth_tbs < spec_for("NVIDIA H100 80GB HBM3").bandwidth_tbs
    assert spec_for("NVIDIA H200").bandwidth_tbs == 4.8
    assert spec_for("NVIDIA H100") is None and spec_for("NVIDIA A100-SXM4-80GB") is None


def test_projection_scales_each_part_by_its_own_ratio():
    h100 = spec_for("NVIDIA H100 80GB HBM3")
    compute, bandwidth = h100.bf16_tflops / RTX_4090.bf16_tflops, h100.bandwidth_tbs / RTX_4090.bandwidth_tbs
    linears_only = projection.dit_step(h100, total_s=2.0, linear_s=2.0, attention_s=0.0, backend="sdpa")
    assert linears_only.fast == pytest.approx(2.0 * compute)
    assert linears_only.slow == pytest.approx(2.0 * compute / projection.SLOW_END_EFFICIENCY)
    rest_only = projection.dit_step(h100, total_s=1.0, linear_s=0.0, attention_s=0.0, backend="sdpa")
    assert rest_only.fast == pytest.approx(bandwidth)
    sage = projection.dit_step(h100, total_s=1.0, linear_s=0.0, attention_s=1.0, backend="sage")
    assert sage.fast == pytest.approx(h100.int8_tops / RTX_4090.int8_tops)
    vae = projection.vae(h100, 10.0)
    assert (vae.fast, vae.slow) == (pytest.approx(10 * bandwidth), pytest.approx(10 * compute))
    video = projection.video(linears_only, vae)
    assert video.fast == pytest.approx(8 * linears_only.fast + vae.fast)


def test_gguf_style_dequant_is_q6_k_with_fp16_rounding_not_bit_exact():
    data = random_q6_k((64, 512), 0.05, torch.Generator().manual_seed(0), torch.device("cpu"))
    exact = dequantize(data, 14, (64, 512), torch.float32)
    style = dequantize_q6_k_fp16(data, (64, 512), torch.float32)
    error = float((style - exact).norm() / exact.norm())
    assert 0 < error < 1e-3  # same values up to fp16 block arithmetic
    assert dequantize_q6_k_fp16(data, (64, 512), torch.bfloat16).dtype == torch.bfloat16
