"""Host tier of the command line: ``wan-accel run`` of the shipped winner workflow on the tiny models end to end (a
16 fps video comes back), readable errors from a real host, ``wan-accel doctor``, ``wan-accel bench`` on two
pairs interrupted and resumed, and the templates the host serves (``tests/data/object_info_wan_accel.json`` is
kept current by ``test_host_object_info.py``).

Tiny stand-ins: the tiny DiT converted to GGUF by ``wan_accel.convert``, a small complete umt5
(``umt5_files``), the sparse ViT-H (``clip_vision_stub``) and a random Wan 2.1 VAE. The CLI's overrides shrink
the job to 32x32, 5 frames, 2 steps, and ``--set`` puts the VAE in fp32 (fp16 convolutions are ~15x slower on
CPU).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.comfy_server import ComfyServer
from tests.support.host_inprocess import import_host
from tests.support.tiny_cli_models import install_cli_models
from tests.support.tiny_models import write_random_image
from wan_accel.graph_fill import load_api_workflow
from wan_accel.workflow_catalog import WORKFLOWS, model_files

REPO_ROOT = Path(__file__).resolve().parents[2]
OBJECT_INFO_PATH = REPO_ROOT / "tests" / "data" / "object_info_wan_accel.json"
CLI = [sys.executable, "-m", "wan_accel"]
WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
VAE_NODE = next(nid for nid, node in WINNER.items() if node["class_type"] == "WanAccelLoadVAE")
TINY = ["--width", "32", "--height", "32", "--length", "5", "--steps", "2", "--set", f"{VAE_NODE}.precision=fp32"]
PROMPT = "a cat walks on the beach"


@pytest.fixture(scope="module")
def tiny_models(wan_pack: ComfyServer, comfy_models: dict[str, str]) -> list[str]:
    """Installs the GGUF DiT, small umt5, ViT-H stub and random VAE; returns the CLI flags that select them."""
    t0 = time.monotonic()
    flags = install_cli_models(wan_pack.models_dir, wan_pack.models_dir / "diffusion_models" / comfy_models["dit"])
    print(f"\n[cli] GGUF DiT, umt5, ViT-H stub and VAE written in {time.monotonic() - t0:.1f} s")
    return flags


@pytest.fixture(scope="module")
def start_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_image(tmp_path_factory.mktemp("cli_inputs") / "start.png", 64, 64, seed=3)


def wan_accel(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    """Runs the CLI the way a user does (``python -m wan_accel``), from the repository root; echoes its output."""
    t0 = time.monotonic()
    done = subprocess.run([*CLI, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {done.returncode}]\n"
          f"{done.stdout}{done.stderr}")
    return done


def _decode(video: Path) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a video file."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def test_host_serves_exactly_the_ui_workflows_as_templates(wan_pack: ComfyServer):
    listed = wan_pack.get_json("/workflow_templates")
    assert sorted(listed[wan_pack.pack_dir_name]) == sorted(w.stem for w in WORKFLOWS.values())
    winner = WORKFLOWS["winner"]
    served = wan_pack.get_json(f"/api/workflow_templates/{wan_pack.pack_dir_name}/{winner.ui_path.name}")
    assert served == json.loads(winner.ui_path.read_text(encoding="utf-8"))


def test_run_winner_end_to_end_produces_a_16_fps_video(wan_pack, tiny_models, start_image, tmp_path):
    out = tmp_path / "out"
    done = wan_accel("run", "--server", wan_pack.url, "--workflow", "winner", "--image", str(start_image),
                     "--prompt", PROMPT, "--seed", "7", "--out", str(out), *TINY, *tiny_models)
    assert done.returncode == 0
    [video] = sorted(out.glob("*.mp4"))
    assert f"saved {video}" in done.stdout
    assert _decode(video) == (5, 32, 32, 16.0)
    assert "KSampler: step 2/2" in done.stderr and "wall time" in done.stdout
    assert "Load Wan DiT (GGUF Q6_K)" in done.stderr


def test_errors_name_the_file_folder_node_and_input(wan_pack, tiny_models, start_image, tmp_path):
    common = ["run", "--server", wan_pack.url, "--image", str(start_image), "--prompt", PROMPT, "--seed", "7",
              "--out", str(tmp_path), *TINY]
    missing = wan_accel(*common, *tiny_models, "--vae", "wan_2.1_vae_absent.safetensors")
    assert missing.returncode == 4
    assert f"wan_2.1_vae_absent.safetensors: put it in ComfyUI/models/vae/ (node #{VAE_NODE} " in missing.stderr

    invalid = wan_accel(*common, *tiny_models, "--steps", "0")
    assert invalid.returncode == 5
    assert "node #11 KSampler, input steps: Value 0 smaller than min of 1" in invalid.stderr
    assert "{" not in invalid.stderr

    (wan_pack.models_dir / "diffusion_models" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    failed = wan_accel(*common, *tiny_models, "--dit", "broken.gguf")
    assert failed.returncode == 6
    assert "node #2 Load Wan DiT (GGUF Q6_K) failed:" in failed.stderr

    unreachable = wan_accel("run", "--server", "http://127.0.0.1:9", *common[3:])
    assert unreachable.returncode == 3
    assert "cannot reach ComfyUI at http://127.0.0.1:9 (connection refused)" in unreachable.stderr


def test_doctor_sees_our_nodes_and_which_real_model_files_are_missing(wan_pack):
    done = wan_accel("doctor", "--server", wan_pack.url)
    assert done.returncode == 0
    loaded = json.loads(OBJECT_INFO_PATH.read_text(encoding="utf-8"))
    assert f"wan-accel nodes loaded: {len(loaded)} (" in done.stdout
    for workflow in WORKFLOWS.values():
        files = len(model_files(load_api_workflow(workflow.api_path)))   # none of the real files is installed
        assert f"{workflow.name} ({workflow.ui_path.name}): {files} problem(s)" in done.stdout
    assert ("[missing] models/vae/wan_2.1_vae.safetensors -> put it in ComfyUI/models/vae/ (download: https://"
            in done.stdout)


def _default_sigint() -> None:
    """Runs in the child before exec: Ctrl-C must reach it even when pytest itself runs with SIGINT ignored (under
    ``nohup`` or ``&``), which a child would otherwise inherit, and then Python installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pairs_csv(folder: Path, start_image: Path) -> Path:
    """Two pairs on one image (the host then reuses its CLIP-vision encode) with different prompts and seeds."""
    path = folder / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "prompt", "seed"])
        writer.writerow(["beach_cat", str(start_image), PROMPT, "1"])
        writer.writerow(["forest_dog", str(start_image), "a dog runs in the forest", "2"])
    return path


def test_bench_two_pairs_survives_an_interruption_and_resumes(wan_pack, tiny_models, start_image, tmp_path):
    pairs, out = _pairs_csv(tmp_path, start_image), tmp_path / "bench"
    args = ["bench", "--server", wan_pack.url, "--pairs", str(pairs), "--out", str(out), *TINY, *tiny_models]
    proc = subprocess.Popen([*CLI, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_sigint)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("sample 2/2: forest_dog") and line.strip().endswith("forest_dog"):
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=60)
    print("\n$ wan-accel " + " ".join(args) + "   [interrupted during sample 2]\n" + "".join(seen) + rest)
    assert proc.returncode == 130 and "run the same command to resume" in rest
    first = json.loads((out / "results.json").read_text())["samples"]
    assert [(s["id"], s["ok"]) for s in first] == [("beach_cat", True)]
    deadline = time.monotonic() + 60
    while (queue := wan_pack.get_json("/queue"))["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.2)  # the host stops an interrupted prompt at its next progress check
    assert queue["queue_running"] == [] and queue["queue_pending"] == []

    resumed = wan_accel(*args)
    assert resumed.returncode == 0
    assert "resuming: 1 finished sample(s)" in resumed.stdout
    assert "sample 1/2" not in resumed.stdout and "sample 2/2: forest_dog" in resumed.stdout
    results = json.loads((out / "results.json").read_text())["samples"]
    assert results[0] == first[0]
    assert [(s["id"], s["ok"], s["seed"]) for s in results] == [("beach_cat", True, 1), ("forest_dog", True, 2)]
    for sample in results:
        assert sample["seconds"] > 0 and Path(sample["outputs"][0]).is_file()
    mean = sum(s["seconds"] for s in results) / 2
    assert f"mean time per sample: {mean:.2f} s -> speed score 1" in resumed.stdout


def test_a_missing_node_type_is_exit_4_with_the_fix_on_this_host(wan_pack):
    """0.3.64 and 0.33 reject an unknown class_type in different reply shapes; both become MissingNodeType."""
    from wan_accel.client import ComfyClient
    from wan_accel.errors import MissingNodeType

    graph = {"7": {"class_type": "WanAccelNoSuchNode", "inputs": {}}}
    with pytest.raises(MissingNodeType) as rejected:
        ComfyClient(wan_pack.url).queue(graph)
    assert rejected.value.exit_code == 4
    assert "WanAccelNoSuchNode" in str(rejected.value) and "restart ComfyUI" in str(rejected.value)
