"""The GPU suite's dry run with the host imported in-process (``COMFYUI_PATH``): every section runs at tiny size
(dim 256, 2 layers, 64x64x5) and reports finite numbers in the layout the GPU run writes. A host-tier test because
the DiT, linear and VAE sections build the host's own models; tests/unit/test_gpu_suite.py covers the rest."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["unit_tests", "dit", "linears", "attention", "vae", "postprocess", "text_encoder", "projection"]


def test_dry_run_with_the_host_runs_every_section(tmp_path):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out",
                           str(tmp_path)], cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    markdown = (tmp_path / "gpu_suite.md").read_text()
    sections = {s["name"]: s for s in report["sections"]}
    assert list(sections) == SECTIONS
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(SECTIONS, "ok"), markdown
    dit = {row["configuration"]: row for row in sections["dit"]["rows"]}
    reference = dit["host bf16 + SDPA"]
    assert reference["cosine"] > 1 - 1e-12 and reference["vs_bf16"] == 1.0
    for name in ("our exact torch dequant + SDPA", "ours: Triton dequant + SDPA"):
        assert dit[name]["rel_l2"] < 0.01  # same weights dequantised exactly: only bf16 rounding differs
    style = dit["ComfyUI-GGUF style (fp16 block math) + SDPA"]
    assert 0 < style["rel_l2"] < 0.05 and style["cosine"] > 0.999  # fp16 block math: close, not exact
    assert all(row["status"] == "ok" for name, row in dit.items() if "Sage" not in name)
    assert any(r["path"].startswith("fused Q6_K matmul") and r["status"] == "ok" for r in sections["linears"]["rows"])
    vae = sections["vae"]["rows"]
    assert [r["operation"] for r in vae] == ["encode", "host decode", "frame-by-frame decode"]
    assert vae[-1]["bit_identical_to_host"] is True and vae[-1]["estimate_gib"] > 0
    projected = sections["projection"]["rows"]
    assert projected and all(0 < r["4090_video_fast_s"] < r["4090_video_slow_s"] for r in projected)
    assert all(math.isfinite(r["s_per_step_here"]) for r in projected)
    assert "a projection from datasheet ratios, not a 4090 measurement" in markdown
