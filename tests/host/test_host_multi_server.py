"""Host tier of ``wan-accel bench`` over several servers: two real ComfyUI hosts on loopback share one batch of six
samples of the shipped winner workflow (both are used, an unreachable address in the list is reported and skipped),
a sample run on the second host gives the same bytes as on the first, and killing one host by its PID during its
second sample still finishes the batch on the other, with no sample lost or run twice.

The tiny stand-ins of ``test_host_cli.py`` (GGUF DiT, small umt5, ViT-H stub, random VAE at 32x32, 5 frames,
2 steps, fp32 VAE) are written once and linked into both hosts. Each host computes on one thread
(``OMP_NUM_THREADS=1``), so on a 2-core machine the two really run side by side. ``-s`` prints the transcripts.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.clip_vision_stub import write_clip_vision_h_stub
from tests.support.comfy_server import ComfyServer
from tests.support.host_inprocess import import_host
from tests.support.tiny_models import write_random_image, write_tiny_wan_i2v
from tests.support.umt5_files import write_small_umt5
from tests.support.wan_vae_weights import write_wan21_vae
from wan_accel.convert import convert
from wan_accel.graph_fill import load_api_workflow
from wan_accel.workflow_catalog import WORKFLOWS

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "wan_accel"]
WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
VAE_NODE = next(nid for nid, node in WINNER.items() if node["class_type"] == "WanAccelLoadVAE")
TINY = ["--width", "32", "--height", "32", "--length", "5", "--steps", "2", "--set", f"{VAE_NODE}.precision=fp32"]
PROMPTS = ["a cat walks on the beach", "a dog runs in the forest", "a bird flies over the sea",
           "a horse jumps a fence", "a fish swims in a pond", "a fox sleeps in the snow"]
FILES = {"diffusion_models": "wan_tiny_i2v_Q6_K.gguf", "text_encoders": "umt5_small.safetensors",
         "clip_vision": "clip_vision_h_stub.safetensors", "vae": "wan21_vae_random.safetensors"}
MODEL_FLAGS = ["--dit", FILES["diffusion_models"], "--text-encoder", FILES["text_encoders"],
               "--clip-vision", FILES["clip_vision"], "--vae", FILES["vae"]]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model files, written once; both hosts link the same files, so they compute the same bytes."""
    import_host()  # the VAE writer takes its key layout from the host's own Wan VAE
    folder = tmp_path_factory.mktemp("multi_models")
    dit = convert(write_tiny_wan_i2v(folder / "wan_tiny_i2v.safetensors"), folder / FILES["diffusion_models"],
                  "Q6_K", progress=False)
    files = {"diffusion_models": dit}
    for kind, writer in (("text_encoders", write_small_umt5), ("clip_vision", write_clip_vision_h_stub),
                         ("vae", write_wan21_vae)):
        files[kind] = folder / FILES[kind]
        writer(files[kind])
    return files


@pytest.fixture(scope="module")
def hosts(model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Two hosts with our pack and the same model files, each computing on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = []
    try:
        for name in ("a", "b"):
            server = ComfyServer(base_dir=tmp_path_factory.mktemp(f"multi_host_{name}"), env=env)
            for folder, path in model_files.items():
                server.add_model(folder, path)
            started.append(server.start())
            error = server.pack_import_error()
            if error is not None:
                pytest.fail(f"ComfyUI could not import the wan-accel pack:\n{error}", pytrace=False)
        print(f"\n[multi] two hosts up: {started[0].url} (pid {started[0].proc.pid}), "
              f"{started[1].url} (pid {started[1].proc.pid})")
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def start_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_image(tmp_path_factory.mktemp("multi_inputs") / "start.png", 64, 64, seed=3)


def pairs_csv(path: Path, image: Path, first_seed: int, ids: list[str] | None = None) -> Path:
    """Six pairs on one image, seeds ``first_seed`` + i; only ``ids`` when given."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "prompt", "seed"])
        for i, prompt in enumerate(PROMPTS):
            if ids is None or f"s{i}" in ids:
                writer.writerow([f"s{i}", str(image), prompt, first_seed + i])
    return path


def name_of(server: ComfyServer) -> str:
    return server.url.split("://", 1)[1]


def bench_args(servers: list[str], pairs: Path, out: Path) -> list[str]:
    return ["bench", *[arg for url in servers for arg in ("--server", url)], "--pairs", str(pairs), "--out", str(out),
            *TINY, *MODEL_FLAGS]


def wan_accel(args: list[str], timeout: float = 600.0) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, from the repository root; echoes the transcript."""
    t0 = time.monotonic()
    done = subprocess.run([*CLI, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {done.returncode}]\n"
          f"{done.stdout}{done.stderr}")
    return done


def results_of(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))["samples"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def shared_batch(hosts, start_image, tmp_path_factory):
    """Six samples over both hosts plus an address nothing listens on."""
    folder = tmp_path_factory.mktemp("multi_batch")
    dead = f"http://127.0.0.1:{free_port()}"
    done = wan_accel(bench_args([hosts[0].url, dead, hosts[1].url], pairs_csv(folder / "pairs.csv", start_image, 10),
                                folder / "bench"))
    return done, folder / "bench", dead


def test_both_servers_share_the_batch_and_an_unreachable_one_is_skipped(hosts, shared_batch):
    done, out, dead = shared_batch
    assert done.returncode == 0, done.stderr
    dead_name = dead.split("://", 1)[1]
    assert (f"server {dead_name} left out for now (checked again while the batch runs): cannot reach ComfyUI at "
            f"{dead} (connection refused)") in done.stdout
    results = results_of(out)
    assert [(r["id"], r["ok"]) for r in results] == [(f"s{i}", True) for i in range(6)]
    used = {r["server"] for r in results}
    assert used == {name_of(hosts[0]), name_of(hosts[1])}
    for host in hosts:
        count = sum(r["server"] == name_of(host) for r in results)
        mean = sum(r["seconds"] for r in results if r["server"] == name_of(host)) / count
        assert f"server {name_of(host)}: {count} sample(s) this run, mean {mean:.2f} s/sample" in done.stdout
    assert f"server {dead_name}: 0 sample(s) this run, mean n/a" in done.stdout
    assert "-> parallel speed-up " in done.stdout
    outputs = [Path(r["outputs"][0]) for r in results]
    assert len(set(outputs)) == 6 and all(p.is_file() and p.stat().st_size > 0 for p in outputs)


def test_a_sample_gives_the_same_bytes_on_either_server(hosts, shared_batch, start_image, tmp_path):
    _, out, _ = shared_batch
    on_b = {r["id"]: Path(r["outputs"][0]) for r in results_of(out) if r["server"] == name_of(hosts[1])}
    assert on_b, "the second host ran part of the batch"
    again = wan_accel(bench_args([hosts[0].url], pairs_csv(tmp_path / "pairs.csv", start_image, 10, list(on_b)),
                                 tmp_path / "bench"))
    assert again.returncode == 0, again.stderr
    on_a = {r["id"]: Path(r["outputs"][0]) for r in results_of(tmp_path / "bench")}
    assert {r["server"] for r in results_of(tmp_path / "bench")} == {name_of(hosts[0])}
    assert sorted(on_a) == sorted(on_b)
    for sample_id, video in on_b.items():
        assert video.read_bytes() == on_a[sample_id].read_bytes(), f"{sample_id}: same seed, same bytes"


def test_killing_one_server_mid_batch_finishes_on_the_other_with_nothing_lost_or_run_twice(hosts, start_image,
                                                                                           tmp_path):
    survivor, victim = hosts
    out = tmp_path / "bench"
    args = bench_args([survivor.url, victim.url], pairs_csv(tmp_path / "pairs.csv", start_image, 20), out)
    proc = subprocess.Popen([*CLI, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen, taken, killed_during = [], [], None
    t0 = time.monotonic()
    for line in proc.stdout:
        seen.append(line)
        started = re.fullmatch(rf"sample \d+/6: (s\d) on {re.escape(name_of(victim))}", line.strip())
        if started:
            taken.append(started.group(1))
        if killed_during is None and len(taken) == 2:  # during its second sample: it has finished one
            killed_during = taken[1]
            time.sleep(1.0)
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=30)
            seen.append(f"[test] killed the host at {victim.url} (pid {victim.proc.pid}) during sample "
                        f"{killed_during}\n")
    rest, _ = proc.communicate(timeout=600)
    transcript = "".join(seen) + rest
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {proc.returncode}]\n{transcript}")
    assert killed_during is not None, "the second host took two samples"
    assert proc.returncode == 0
    assert f"server {name_of(victim)} stopped answering during sample " in transcript
    assert "re-queued for another server (retry 1 of 2)" in transcript
    results = results_of(out)
    assert [(r["id"], r["ok"]) for r in results] == [(f"s{i}", True) for i in range(6)]
    finished = [line for line in transcript.splitlines() if line.startswith("sample ") and " s on " in line]
    assert sorted(line.split()[2] for line in finished) == [f"s{i}" for i in range(6)], "each finished once"
    videos = sorted((out / "videos").iterdir())
    assert videos == sorted(Path(r["outputs"][0]) for r in results), "one download per sample, none extra"
    [killed] = [r for r in results if r["id"] == killed_during]
    assert killed["server"] == name_of(survivor), "the sample in flight on the killed host ran on the other"
    assert [r["id"] for r in results if r["server"] == name_of(victim)] == taken[:1], "what it finished is kept"
    assert f"server {name_of(victim)}: 1 sample(s) this run" in transcript
