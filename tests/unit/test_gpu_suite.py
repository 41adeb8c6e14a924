"""The GPU suite's harness on CPU: ``--dry-run`` writes the JSON and markdown layout with every section named and
in its expected state (host sections skipped with the reason when ``COMFYUI_PATH`` is unset; the host tier runs
them), in fp32 with the dtype labelled, within its budget and per-section limit; the budget and the limit skip
what does not fit; the unit-test section fails when nothing passed; and the benchmark helpers it relies on (GPU
names, the 4090 projection, the ComfyUI-GGUF style dequantisation) compute what they say."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks.lib import projection_4090 as projection
from benchmarks.lib.gguf_style import dequantize_q6_k_fp16
from benchmarks.lib.gpu_specs import RTX_4090, spec_for
from benchmarks.lib.wan14b_models import random_q6_k
from benchmarks.suite import projection as suite_projection
from benchmarks.suite import unit_tests as suite_unit_tests
from benchmarks.suite.context import full_shape
from benchmarks.suite.runner import FAILED, OK, SKIPPED, Budget, Section, SectionResult, run_sections
from wan_accel_kernels.gguf import dequantize

REPO_ROOT = Path(__file__).resolve().parents[2]

SECTIONS = ["unit_tests", "dit", "linears", "attention", "vae", "postprocess", "text_encoder", "wan22",
            "wan22_steps", "projection"]
HOST_SECTIONS = {"dit", "linears", "vae", "wan22_steps"}
DRY_RUN_TIMEOUT_S = 240  # the dry run's own bound is its 180 s budget plus start-up
H100 = spec_for("NVIDIA H100 80GB HBM3")


def run_suite(out: Path, *flags: str, comfyui: str | None = None,
              timeout: int = DRY_RUN_TIMEOUT_S) -> tuple[dict, str]:
    """Runs ``python -m benchmarks.gpu_suite --dry-run`` in a child process; returns (the JSON, the markdown)."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    if comfyui:
        env["COMFYUI_PATH"] = comfyui
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--dry-run", "--out", str(out), *flags],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
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
        dim=256, layers=1, frames=5, height=32, width=32)
    assert report["section_limit_s"] == 45 and report["cpu_threads"] == 1
    assert "fp32" in report["dtypes"] and "fp32" in markdown.splitlines()[2]
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
    report, _ = no_host
    sections = check_layout(*no_host)
    assert report["budget_s"] == 180
    expected = {name: ("skipped", "needs the host in-process: COMFYUI_PATH is not set") for name in HOST_SECTIONS}
    expected["projection"] = ("skipped", "needs the dit_rows, linear_s measurements")
    expected.update({name: ("ok", "") for name in ("unit_tests", "attention", "postprocess", "text_encoder", "wan22")})
    assert {name: (s["status"], s["reason"][:len(expected[name][1])]) for name, s in sections.items()} == expected
    assert report["elapsed_s"] < report["budget_s"]


def test_dry_run_sections_measure_what_they_say(no_host):
    sections = check_layout(*no_host)
    tests = sections["unit_tests"]["rows"]
    assert sum(r["passed"] for r in tests) > 0 and sum(r["failed"] + r["errors"] for r in tests) == 0
    sdpa = next(r for r in sections["attention"]["rows"] if r["kind"] == "sdpa")
    assert sdpa["ms"] > 0 and sdpa["vs_sdpa"] == 1.0 and sdpa["cosine"] > 0.999
    assert sdpa["dtype"] == "fp32" and "1x2x8x128 fp32" in sections["attention"]["notes"][0]  # not bf16 on a CPU
    placements = sections["postprocess"]["rows"]
    assert len(placements) == 3 and all(r["max_abs_diff_vs_cpu"] == 0.0 for r in placements)  # CPU: identical
    assert all(r["dtype"] == "fp32" for r in placements)
    encode = sections["text_encoder"]["rows"][-1]
    assert 0.5 < encode["fp8_weights_mib"] / encode["bf16_weights_mib"] < 0.52  # 1 byte vs 2, plus row scales
    switch = {r["mode"]: r for r in sections["wan22"]["rows"]}
    assert list(switch) == ["pageable", "reload"] and switch["pageable"]["vs_pageable"] == 1.0  # no pinning on a CPU
    assert all(r["blocks"] == 1 and r["gib_moved"] == pytest.approx(0.2684, abs=1e-4) for r in switch.values())
    assert any("peak VRAM 14.1 GiB" in note for note in sections["wan22"]["notes"])


def test_a_budget_too_small_skips_every_section_with_its_estimate(tmp_path):
    report, markdown = run_suite(tmp_path, "--budget-s", "0.5", timeout=60)
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


def _fake_section(name: str, run) -> Section:
    return Section(name, name.title(), lambda ctx: 0.0, run)


def _report() -> dict:
    return {"device": {"name": "CPU", "torch": torch.__version__, "triton": "n/a"}, "dry_run": True, "budget_s": 60,
            "elapsed_s": 0.0, "section_limit_s": 0.3, "cpu_threads": 1, "dtypes": "fp32", "sections": []}


def test_a_section_past_its_limit_is_skipped_over_budget_and_the_next_one_runs(tmp_path):
    def stuck(ctx):
        try:
            time.sleep(30)
        except Exception:  # a section's own error handling must not swallow the limit
            pass
        return SectionResult(rows=[{"never": 1}])

    def busy(ctx):
        while True:
            sum(range(1000))

    sections = [_fake_section("stuck", stuck), _fake_section("busy", busy),
                _fake_section("after", lambda ctx: SectionResult(rows=[{"value": 1}]))]
    report = _report()
    started = time.perf_counter()
    run_sections(sections, None, Budget(60), report, tmp_path, limit_s=0.3)
    assert time.perf_counter() - started < 5
    states = [(s["status"], s["reason"]) for s in report["sections"]]
    limit = "over budget: ran past the 0.3 s per-section limit"
    assert states == [(SKIPPED, limit), (SKIPPED, limit), (OK, "")]
    assert all(0.25 < s["seconds"] < 3 for s in report["sections"][:2]) and report["sections"][2]["rows"]


def test_the_limit_never_outlasts_the_budget(tmp_path):
    report = _report()
    run_sections([_fake_section("stuck", lambda ctx: time.sleep(30))], None, Budget(0.4), report, tmp_path,
                 limit_s=45)
    stuck = report["sections"][0]
    assert stuck["status"] == SKIPPED and stuck["reason"].startswith("over budget: ran past the 0.")
    assert stuck["reason"].endswith(" s left of the budget")
    assert stuck["seconds"] < 3 and "| stuck | skipped |" in (tmp_path / "gpu_suite.md").read_text()


def _test_file(folder: Path, body: str) -> str:
    path = folder / "test_device_only.py"
    path.write_text("import pytest\n\n" + body)
    return str(path)


@pytest.mark.parametrize("body, status, reason", [
    ("def test_cuda():\n    pytest.skip('needs CUDA')\n\n\ndef test_more():\n    pytest.skip('needs CUDA')\n",
     FAILED, "no test passed (2 collected, 2 skipped)"),
    ("def helper():\n    pass\n", FAILED, "no test passed (0 collected, 0 skipped)"),
    ("def test_cuda():\n    pytest.skip('needs CUDA')\n\n\ndef test_runs():\n    assert 1 + 1 == 2\n", OK, ""),
    ("def test_wrong():\n    assert 1 + 1 == 3\n", FAILED, "pytest exit 1"),
])
def test_the_unit_test_section_fails_unless_a_test_passed(tmp_path, monkeypatch, body, status, reason):
    monkeypatch.setattr(suite_unit_tests, "test_files", lambda dry_run: [_test_file(tmp_path, body)])
    ctx = SimpleNamespace(dry_run=True, cuda=False, budget=Budget(120))
    result = suite_unit_tests.run(ctx)
    assert result.status == status and result.reason.startswith(reason), result.reason


def test_projection_scales_each_configurations_linears_by_the_peak_of_its_arithmetic():
    bandwidth = H100.bandwidth_tbs / RTX_4090.bandwidth_tbs
    expected = {"bf16": H100.bf16_tflops / RTX_4090.bf16_tflops, "int8": H100.int8_tops / RTX_4090.int8_tops,
                "fp8": H100.fp8_tflops / RTX_4090.fp8_tflops}
    assert expected["int8"] == pytest.approx(2.9956, abs=1e-3) and expected["fp8"] == pytest.approx(5.9912, abs=1e-3)
    for arithmetic, ratio in expected.items():
        assert projection.peak_ratio(H100, arithmetic) == pytest.approx(ratio)
        only_linears = projection.dit_step(H100, "c", 2.0, 2.0, arithmetic, 0.0, "sdpa")
        assert only_linears.fast == pytest.approx(2.0 * ratio)
        assert only_linears.slow == pytest.approx(2.0 * ratio / projection.SLOW_END_EFFICIENCY)
    rest_only = projection.dit_step(H100, "c", 1.0, 0.0, "int8", 0.0, "sdpa")
    assert rest_only.fast == pytest.approx(bandwidth)
    sage = projection.dit_step(H100, "c", 1.0, 0.0, "bf16", 1.0, "sage")
    assert sage.fast == pytest.approx(expected["int8"])
    mixed = projection.dit_step(H100, "c", 3.0, 1.0, "fp8", 0.5, "sdpa")
    assert mixed.fast == pytest.approx(1.0 * expected["fp8"] + 0.5 * expected["bf16"] + 1.5 * bandwidth)
    vae = projection.vae(H100, 10.0)
    assert (vae.fast, vae.slow) == (pytest.approx(10 * bandwidth), pytest.approx(10 * expected["bf16"]))
    video = projection.video(only_linears, vae)
    assert video.fast == pytest.approx(8 * only_linears.fast + vae.fast)
    with pytest.raises(ValueError, match="no tensor-core peak for 'fp4'"):
        projection.peak_ratio(H100, "fp4")


def test_the_wan22_switch_is_its_own_term_of_a_video():
    switch = projection.expert_switch(12_500_000_000)
    assert (switch.fast, switch.slow) == (pytest.approx(0.5), pytest.approx(1.0))  # 12.5 GB at 25 and 12.5 GB/s
    step = projection.Range(10.0, 13.0)
    video = projection.wan22_video(step, step.scaled(0.5), 2, 2, switch, None)
    assert (video.fast, video.slow) == (pytest.approx(30.5), pytest.approx(40.0))


def test_a_negative_remainder_is_an_error_naming_the_configuration_and_the_numbers():
    with pytest.raises(ValueError) as error:
        projection.dit_step(H100, "W8A8 int8 + Sage", total_s=1.0, linear_s=0.75, arithmetic="int8",
                            attention_s=0.5, backend="sage")
    message = str(error.value)
    for text in ("W8A8 int8 + Sage", "int8 linears (0.75 s)", "sage attention (0.5 s)", "step (1 s)", "by 0.25 s"):
        assert text in message


def _dit_row(name: str, arithmetic: str, seconds: float, attention: str = "sdpa", model: str = "gguf") -> dict:
    return {"configuration": name, "status": "ok", "arithmetic": arithmetic, "s_per_step": seconds,
            "attention": attention, "model": model, "peak_gib": 20.0}


def _projection_ctx(dit_rows: list[dict], linear_s: dict) -> SimpleNamespace:
    measured = {"dit_rows": dit_rows, "linear_s": linear_s, "attention_s": {"sdpa": 0.02, "sage": 0.01},
                "vae_s": {"fp16": 10.0}}
    return SimpleNamespace(dry_run=False, shape=full_shape(), measured=measured,
                           device_name=lambda: "NVIDIA H100 80GB HBM3")


def test_the_projection_section_uses_each_rows_own_linears_and_labels_a_range_as_a_projection():
    rows = [_dit_row("ours + Sage", "bf16", 4.0, "sage"), _dit_row("W8A8 int8 + Sage", "int8", 3.0, "sage", "w8a8"),
            _dit_row("W8A8 fp8 + Sage", "fp8", 3.2, "sage", "w8a8"), _dit_row("host bf16 + SDPA", "bf16", 5.0,
                                                                             model="bf16")]
    result = suite_projection.run(_projection_ctx(rows, {"bf16": 2.0, "int8": 1.0, "fp8": 1.2}))
    assert result.status == OK
    by_name = {r["configuration"]: r for r in result.rows}
    assert {name: r["measured_linear_s"] for name, r in by_name.items()} == {
        "ours + Sage": 2.0, "W8A8 int8 + Sage": 1.0, "W8A8 fp8 + Sage": 1.2, "host bf16 + SDPA": 2.0}
    attention = 0.01 * 40
    int8 = by_name["W8A8 int8 + Sage"]
    step = projection.dit_step(H100, "W8A8 int8 + Sage", 3.0, 1.0, "int8", attention, "sage")
    assert int8["projected_4090_step_fast_s"] == pytest.approx(step.fast)
    assert int8["projected_4090_step_fast_s"] == pytest.approx(
        1.0 * H100.int8_tops / RTX_4090.int8_tops + attention * H100.int8_tops / RTX_4090.int8_tops
        + (3.0 - 1.0 - attention) * H100.bandwidth_tbs / RTX_4090.bandwidth_tbs)
    for row in result.rows:
        assert 0 < row["projected_4090_step_fast_s"] < row["projected_4090_step_slow_s"]
        assert row["projected_4090_video_fast_s"] < row["projected_4090_video_slow_s"]
        assert not any(key.startswith("4090") for key in row)  # every projected number says so in its name
    assert [r["fits_24_gib"] for r in result.rows] == [True, True, True, False]  # bf16 weights never fit
    assert result.notes[-1] == projection.LABEL == "a projection from datasheet ratios, not a 4090 measurement"
    assert all(assumption in result.notes for assumption in projection.ASSUMPTIONS)
    assert "Projected" in suite_projection.SECTION.title and "not a measurement" in suite_projection.SECTION.title


def test_the_projection_section_fails_on_a_negative_remainder_and_keeps_the_other_rows():
    rows = [_dit_row("ours: Triton dequant + SDPA", "bf16", 4.0), _dit_row("W8A8 int8 + SDPA", "int8", 0.5)]
    result = suite_projection.run(_projection_ctx(rows, {"bf16": 2.0, "int8": 1.0}))
    assert result.status == FAILED and result.reason.startswith("benchmarks/lib/projection_4090.py: W8A8 int8 + SDPA:")
    assert result.rows[0]["status"] == "ok" and result.rows[0]["projected_4090_step_fast_s"] > 0
    assert result.rows[1]["status"].startswith("failed: ") and "projected_4090_step_fast_s" not in result.rows[1]


def test_a_row_whose_arithmetic_was_not_measured_is_not_projected():
    result = suite_projection.run(_projection_ctx([_dit_row("W8A8 fp8 + SDPA", "fp8", 3.0)], {"bf16": 2.0}))
    assert result.status == OK
    assert result.rows == [{"configuration": "W8A8 fp8 + SDPA", "arithmetic": "fp8",
                            "status": "not projected: no fp8 linear or sdpa attention time measured"}]


def test_gguf_style_dequant_is_q6_k_with_fp16_rounding_not_bit_exact():
    data = random_q6_k((64, 512), 0.05, torch.Generator().manual_seed(0), torch.device("cpu"))
    exact = dequantize(data, 14, (64, 512), torch.float32)
    style = dequantize_q6_k_fp16(data, (64, 512), torch.float32)
    error = float((style - exact).norm() / exact.norm())
    assert 0 < error < 1e-3  # same values up to fp16 block arithmetic
    assert dequantize_q6_k_fp16(data, (64, 512), torch.bfloat16).dtype == torch.bfloat16
