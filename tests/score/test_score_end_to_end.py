"""End to end on a real host: the shipped winner workflow makes two tiny videos per configuration, ``bench --score``
scores each with all five metrics (random-weight files in each library's format), a rerun resumes without scoring
again, ``score`` of the results file gives the same indices, and ``compare`` writes its table, JSON and figures.

The host (``COMFYUI_PATH``) runs in its own Python (``COMFYUI_PYTHON``), which also writes the tiny models; the
client and the metrics run in this tier's Python.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.lib.score_weights import write_random_weights
from tests.support.comfy_server import ComfyServer
from tests.support.tiny_models import write_random_image
from wan_accel.batch.samples import speed_score
from wan_accel.graph_fill import load_api_workflow
from wan_accel.workflow_catalog import WORKFLOWS

REPO_ROOT = Path(__file__).resolve().parents[2]
WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
VAE_NODE = next(nid for nid, node in WINNER.items() if node["class_type"] == "WanAccelLoadVAE")
#: 128 px: RAFT needs 121 px a side and AMT-S 113; 5 frames, fp32 VAE (fp16 convolutions crawl on a CPU).
TINY = ["--width", "128", "--height", "128", "--length", "5", "--set", f"{VAE_NODE}.precision=fp32"]
INDICES = {"subject", "background", "smoothness", "imaging", "dynamic"}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A started host with the tiny winner-workflow files, and the CLI flags that select them."""
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip("COMFYUI_PATH is not set: the end-to-end score test needs a ComfyUI host")
    server = ComfyServer(base_dir=tmp_path_factory.mktemp("score_host"))
    written = subprocess.run([server.python, "-m", "tests.support.tiny_cli_models", str(server.models_dir)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert written.returncode == 0, written.stderr[-3000:]
    flags = json.loads(written.stdout.strip().splitlines()[-1])
    server.start(timeout=300)
    try:
        yield server, flags
    finally:
        server.stop()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    path = folder / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "prompt", "seed"])
        for number, prompt in enumerate(("a cat walks on the beach", "a dog runs in the forest"), start=1):
            image = write_random_image(folder / f"start{number}.png", 160, 128, seed=number)
            writer.writerow([f"pair{number}", str(image), prompt, str(number)])
    return path


def wan_accel(*args: str, timeout: float = 900.0) -> subprocess.CompletedProcess:
    """The CLI as a user runs it; echoes its output."""
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wan_accel", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {done.returncode}]\n"
          f"{done.stdout}{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def batches(host, weights, pairs, tmp_path_factory) -> dict[str, Path]:
    """Two scored batches of the same pairs and seeds: 2 steps (A) and 1 step (B)."""
    server, flags = host
    out = {}
    for name, steps in (("A", "2"), ("B", "1")):
        folder = tmp_path_factory.mktemp(f"bench_{name}")
        done = wan_accel("bench", "--server", server.url, "--pairs", str(pairs), "--out", str(folder), *TINY,
                         "--steps", steps, *flags, "--score", "--weights", str(weights), "--score-device", "cpu")
        assert done.returncode == 0
        out[name] = folder
        out[f"{name}_stdout"] = done.stdout
    return out


def test_bench_score_records_every_index_and_the_final_score(batches):
    results = json.loads((batches["A"] / "results.json").read_text())["samples"]
    scores = json.loads((batches["A"] / "scores.json").read_text())
    assert [r["id"] for r in results] == ["pair1", "pair2"] and all(r["ok"] for r in results)
    for result in results:
        assert set(result["metrics"]) == INDICES
        record = scores["samples"][result["id"]]
        assert record["indices"] == pytest.approx(result["metrics"], abs=0)
        assert 0.0 <= record["indices"]["subject"] <= 1.0 and record["indices"]["dynamic"] in (0.0, 1.0)
        assert len(record["curves"]["subject"]["to_image"]) == 5 and len(record["curves"]["background"]
                                                                             ["consecutive"]) == 4
        assert record["seconds"] == result["seconds"] and record["speed_score"] == speed_score(result["seconds"])
    means = scores["summary"]["means"]
    speed = speed_score(sum(r["seconds"] for r in results) / len(results))
    expected = 0.2 * (sum(means[n] for n in ("subject", "background", "smoothness", "imaging")) + speed)
    assert scores["summary"]["final"] == pytest.approx(expected, abs=1e-12)
    assert f"final score {expected:.4f} = 0.2 x" in batches["A_stdout"]


def test_a_rerun_resumes_without_scoring_again(host, weights, pairs, batches):
    server, flags = host
    before = (batches["A"] / "scores.json").read_bytes()
    done = wan_accel("bench", "--server", server.url, "--pairs", str(pairs), "--out", str(batches["A"]), *TINY,
                     "--steps", "2", *flags, "--score", "--weights", str(weights), "--score-device", "cpu")
    assert done.returncode == 0 and "resuming: 2 finished sample(s)" in done.stdout
    assert (batches["A"] / "scores.json").read_bytes() == before


def test_score_of_the_results_file_gives_the_same_indices(weights, batches, tmp_path):
    out = tmp_path / "scores.json"
    done = wan_accel("score", "--videos", str(batches["B"] / "results.json"), "--weights", str(weights),
                     "--device", "cpu", "--out", str(out))
    assert done.returncode == 0 and "final score" in done.stdout
    again = json.loads(out.read_text())["samples"]
    bench = json.loads((batches["B"] / "scores.json").read_text())["samples"]
    for sample_id, record in bench.items():
        assert again[sample_id]["indices"] == pytest.approx(record["indices"], abs=1e-9)


def test_compare_gives_the_table_the_json_and_a_figure_per_sample(batches, tmp_path):
    from PIL import Image

    done = wan_accel("compare", str(batches["A"]), str(batches["B"]), "--out", str(tmp_path / "cmp"),
                     "--resamples", "500")
    assert done.returncode == 0
    assert "2 paired sample(s)" in done.stdout and "moved most" in done.stdout
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [d["name"] for d in saved["differences"]] == ["subject", "background", "smoothness", "imaging", "dynamic"]
    a = json.loads((batches["A"] / "scores.json").read_text())["samples"]
    b = json.loads((batches["B"] / "scores.json").read_text())["samples"]
    for diff in saved["differences"]:
        mean = sum(b[i]["indices"][diff["name"]] - a[i]["indices"][diff["name"]] for i in a) / 2
        assert diff["delta"] == pytest.approx(mean) and diff["low"] <= mean + 1e-12 <= diff["high"] + 2e-12
    assert saved["final"]["delta"] == pytest.approx(saved["final"]["b"] - saved["final"]["a"])
    for sample_id in ("pair1", "pair2"):
        with Image.open(tmp_path / "cmp" / "figures" / f"{sample_id}.png") as figure:
            assert figure.format == "PNG" and figure.width >= 1000 and figure.height >= 600
