"""``wan-accel bench --split-at 2 --server A --server B`` on two real ComfyUI hosts (the fixtures and tiny winner of
``test_host_split_denoise.py``: 32x32, 5 frames, 4 uni_pc steps, fp32 VAE): every sample split, stage A on host A
and stage B on host B, with fp32 transfer.

Proven here: each sample's decoded video equals the one-server run of the same split (the host's two chained
KSamplerAdvanced, :func:`wan_accel.split_graph.one_server_graph`) with its seed; ``results.json`` names the pair
that ran it and the split in its configuration; the same command resumes without running anything again.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.host.test_host_split_denoise import (PROMPT, SEED, SPLIT, TINY, cli_models, host_b, reference,  # noqa: F401
                                                run_one_server, start_image, video_frames, winner_graph)
from wan_accel.batch.servers import server_name
from wan_accel.split_graph import one_server_graph

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_bench(args: list[str]) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wan_accel", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {done.returncode}]\n"
          f"{done.stdout}{done.stderr}")
    return done


def test_bench_split_gives_every_sample_the_video_of_its_one_server_split(wan_pack, host_b, cli_models,
                                                                          start_image, reference, tmp_path):
    seeds = {"s0": SEED, "s1": SEED + 1}
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "prompt", "seed"])
        writer.writerows([sample, str(start_image), PROMPT, seed] for sample, seed in seeds.items())
    out = tmp_path / "bench"
    args = ["bench", "--split-at", str(SPLIT), "--server", wan_pack.url, "--server", host_b.url, "--transfer",
            "fp32", "--pairs", str(pairs), "--out", str(out), *TINY, *cli_models]
    done = run_bench(args)
    assert done.returncode == 0
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    pair = f"{server_name(wan_pack.url)} -> {server_name(host_b.url)}"
    assert [(r["id"], r["ok"], r["server"]) for r in saved["samples"]] == [("s0", True, pair), ("s1", True, pair)]
    assert saved["config"]["split_at"] == SPLIT and saved["config"]["transfer"] == "fp32"

    second = run_one_server(wan_pack, one_server_graph(winner_graph(cli_models, seed=seeds["s1"]), SPLIT),
                            start_image)
    expected = {"s0": reference["video"], "s1": second["video"]}
    assert not np.array_equal(expected["s0"], expected["s1"]), "the two seeds give two videos"
    for result in saved["samples"]:
        [video] = result["outputs"]
        assert np.array_equal(video_frames(Path(video)), expected[result["id"]]), result["id"]

    again = run_bench(args)
    assert again.returncode == 0 and "resuming: 2 finished sample(s)" in again.stdout + again.stderr
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["samples"] == saved["samples"]
