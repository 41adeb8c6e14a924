"""Denoising split across two real ComfyUI hosts (``wan_accel/split_run.py``) on the shipped winner workflow with the
tiny stand-ins of ``test_host_cli.py`` (32x32, 5 frames, 4 uni_pc steps split at step 2, fp32 VAE).

Host A is the session's host, host B a second ``ComfyServer`` with the same model files linked in. The reference
is the unsplit workflow, its one KSampler, on one server. Proven here:

* with fp32 transfer the two-host run equals the unsplit run bit for bit (final latent, frames, decoded video) for
  uni_pc, which is multistep (stage B replays stage A's predictions, so its solver history crosses the split), and
  for heun, whose second call of step K-1 lands on the split sigma; the payload is one prediction per call;
* bf16 and int8 stay within stated bounds, printed beside the Q6_K-vs-float error of the same tiny DiT, with the
  bytes each format puts on the wire;
* Split Sampler (stage B) refuses a corrupted payload and one of another seed, step split, sampler or shape,
  naming the mismatch;
* ``wan-accel run --split-at 2 --server A --server B`` writes the mp4 the unsplit run writes.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.comfy_server import ComfyServer, ExecutionFailed, PromptRejected, read_latent
from tests.support.tiny_cli_models import install_cli_models
from tests.support.tiny_models import write_random_image
from wan_accel.client import ComfyClient
from wan_accel.graph_fill import Overrides, fill, load_api_workflow
from wan_accel.quality.video_io import read_frames
from wan_accel.split_graph import split_graph
from wan_accel.split_run import run_split
from wan_accel.workflow_catalog import WORKFLOWS

REPO_ROOT = Path(__file__).resolve().parents[2]
WINNER = load_api_workflow(WORKFLOWS["winner"].api_path)
PROMPT, SEED, STEPS, SPLIT = "a cat walks on the beach", 7, 4, 2
TINY = ["--width", "32", "--height", "32", "--length", "5", "--steps", str(STEPS), "--set", "9.precision=fp32"]
FOLDERS = {"--dit": "diffusion_models", "--text-encoder": "text_encoders", "--clip-vision": "clip_vision",
           "--vae": "vae"}
ROLES = {"--dit": "dit", "--text-encoder": "text_encoder", "--clip-vision": "clip_vision", "--vae": "vae"}
PROBE_LATENT, PROBE_FRAMES = "90", "91"
BOUNDS = {"bf16": 0.00015, "int8": 0.0005, "int8-channel": 0.0005}
"""Largest relative L2 of the final latent against the unsplit run, per format: about 4x what both hosts measured
(bf16 0.000032, int8 0.000127, int8-channel 0.000114; the transfer rounds each prediction by at most 2^-8 (bf16) or
half a 1/127 step (int8) a value, and a prediction reaches the final latent scaled by the steps' sigma ratios)."""


@pytest.fixture(scope="module")
def cli_models(wan_pack: ComfyServer, comfy_models: dict[str, str]) -> list[str]:
    return install_cli_models(wan_pack.models_dir, wan_pack.models_dir / "diffusion_models" / comfy_models["dit"])


@pytest.fixture(scope="module")
def host_b(wan_pack: ComfyServer, cli_models: list[str], tmp_path_factory: pytest.TempPathFactory):
    """A second host with the same model files (linked from host A's folders)."""
    server = ComfyServer(base_dir=tmp_path_factory.mktemp("split_host_b"))
    for flag, name in zip(cli_models[::2], cli_models[1::2]):
        server.add_model(FOLDERS[flag], wan_pack.models_dir / FOLDERS[flag] / name)
    try:
        server.start()
        error = server.pack_import_error()
        if error is not None:
            pytest.fail(f"ComfyUI could not import the wan-accel pack:\n{error}", pytrace=False)
        print(f"\n[split] host B up in {server.startup_seconds:.1f} s on {server.url}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def start_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_image(tmp_path_factory.mktemp("split_inputs") / "start.png", 64, 64, seed=3)


def winner_graph(cli_models: list[str], seed: int = SEED, steps: int = STEPS, width: int = 32,
                 sampler: str = "uni_pc") -> dict:
    """The winner filled as ``wan-accel run`` fills it, with a SaveLatent of the final latent and a SaveImage of
    the post-processed frames (lossless probes beside the mp4)."""
    models = {ROLES[flag]: name for flag, name in zip(cli_models[::2], cli_models[1::2])}
    graph = fill(WINNER, Overrides(prompt=PROMPT, seed=seed, steps=steps, width=width, height=32, length=5,
                                   models=models, settings={"9.precision": "fp32", "11.sampler_name": sampler},
                                   filename_prefix="wan_accel/start"))
    graph[PROBE_LATENT] = {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0],
                                                                 "filename_prefix": "split/latent"}}
    graph[PROBE_FRAMES] = {"class_type": "SaveImage", "inputs": {"images": ["13", 0],
                                                                "filename_prefix": "split/frames"}}
    return graph


def frames_of(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0 for p in sorted(paths)])


def outputs(paths: list[Path]) -> dict:
    """Final latent, probe frames and decoded mp4 frames from the files of one run."""
    [latent] = [p for p in paths if p.suffix == ".latent"]
    [video] = [p for p in paths if p.suffix == ".mp4"]
    return {"latent": read_latent(latent), "frames": frames_of([p for p in paths if p.suffix == ".png"]),
            "video": read_frames(video)[0]}


def run_one_server(server: ComfyServer, graph: dict, image: Path) -> dict:
    graph = fill(graph, Overrides(image=server.add_input(image)))
    history = server.run(graph, timeout=600)
    return outputs([*server.output_files(history, "latents"), *server.output_files(history, "images")])


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def reference(wan_pack, cli_models, start_image) -> dict:
    """The unsplit workflow (one KSampler over the whole schedule) on one server: what fp32 transfer reproduces."""
    return run_one_server(wan_pack, winner_graph(cli_models), start_image)


def split_outputs(wan_pack, host_b, cli_models, start_image, transfer: str, out: Path, sampler: str = "uni_pc"):
    clients = (ComfyClient(wan_pack.url), ComfyClient(host_b.url))
    run = run_split(clients, winner_graph(cli_models, sampler=sampler), Overrides(), start_image, out, SPLIT,
                    transfer, lambda event: None, timeout=600)
    return run, outputs(run.paths)


def test_fp32_transfer_across_two_servers_equals_the_unsplit_run_bit_for_bit(wan_pack, host_b, cli_models,
                                                                            start_image, reference, tmp_path):
    run, split = split_outputs(wan_pack, host_b, cli_models, start_image, "fp32", tmp_path)
    assert torch.equal(split["latent"], reference["latent"])
    assert np.array_equal(split["frames"], reference["frames"]) and split["frames"].shape == (5, 32, 32, 3)
    assert np.array_equal(split["video"], reference["video"])
    # uni_pc calls the model once a step: SPLIT predictions of 4 bytes a value and a small header
    assert 0 < run.payload_bytes - SPLIT * 4 * reference["latent"].numel() < 600
    assert (f"exported {SPLIT} prediction(s) {list(reference['latent'].shape)} before step {SPLIT} of {STEPS} as "
            f"fp32:") in run.stage_a.texts[run.graphs.export_id][0]


def test_a_second_order_sampler_splits_bit_for_bit_too(wan_pack, host_b, cli_models, start_image, tmp_path):
    unsplit = run_one_server(wan_pack, winner_graph(cli_models, sampler="heun"), start_image)
    run, split = split_outputs(wan_pack, host_b, cli_models, start_image, "fp32", tmp_path, sampler="heun")
    assert torch.equal(split["latent"], unsplit["latent"]) and np.array_equal(split["video"], unsplit["video"])
    # heun: 2 calls a step; step SPLIT-1's second call is at the split sigma, so stage B computes it itself
    assert f"exported {2 * SPLIT - 1} prediction(s)" in run.stage_a.texts[run.graphs.export_id][0]


def test_bf16_and_int8_transfer_stay_within_their_bounds_beside_the_q6k_error(wan_pack, host_b, cli_models,
                                                                            start_image, reference, tmp_path,
                                                                            comfy_models):
    float_dit = winner_graph(cli_models)
    float_dit["2"] = {"class_type": "UNETLoader", "inputs": {"unet_name": comfy_models["dit"],
                                                             "weight_dtype": "default"}}
    unquantised = run_one_server(wan_pack, float_dit, start_image)
    rows = {"Q6_K DiT vs float (unsplit)": (rel_l2(reference["latent"], unquantised["latent"]),
                                            psnr(reference["frames"], unquantised["frames"]), None)}
    fp32_bytes = SPLIT * 4 * reference["latent"].numel()
    for transfer in BOUNDS:
        run, split = split_outputs(wan_pack, host_b, cli_models, start_image, transfer, tmp_path / transfer)
        rows[f"{transfer} transfer vs unsplit"] = (rel_l2(split["latent"], reference["latent"]),
                                                   psnr(split["frames"], reference["frames"]), run.payload_bytes)
    print(f"\n[split] latent {list(reference['latent'].shape)}, {SPLIT} predictions, fp32 body {fp32_bytes} bytes")
    print(f"{'':40} {'final latent rel. L2':>20} {'frames PSNR dB':>15} {'payload bytes':>14}")
    for name, (error, frames_psnr, size) in rows.items():
        print(f"{name:40} {error:20.6f} {frames_psnr:15.2f} {'' if size is None else size:>14}")
    for transfer, bound in BOUNDS.items():
        error, _, size = rows[f"{transfer} transfer vs unsplit"]
        assert 0 < error < bound
    assert rows["Q6_K DiT vs float (unsplit)"][0] > 0   # the DiT's weights reach the final latent
    assert rows["bf16 transfer vs unsplit"][2] < 0.51 * fp32_bytes + 600
    assert rows["int8 transfer vs unsplit"][2] < 0.27 * fp32_bytes + 600


def _stage_b_error(host_b: ComfyServer, graph: dict, payload: bytes, name: str, split: int = SPLIT) -> str:
    """The Split Sampler (stage B) failure of ``graph`` (split at ``split``) reading ``payload`` as ``name``."""
    graphs = split_graph(graph, split, "fp32")
    (host_b.input_dir / "wan_accel").mkdir(exist_ok=True)
    (host_b.input_dir / "wan_accel" / name).write_bytes(payload)
    stage_b = fill(graphs.stage_b, Overrides(image="start.png"))
    stage_b[graphs.import_id]["inputs"]["payload"] = f"wan_accel/{name}"
    with pytest.raises(ExecutionFailed) as failed:
        host_b.run(stage_b, timeout=600)
    assert failed.value.details["node_type"] == "WanAccelSplitSamplerB"
    return failed.value.details["exception_message"]


def test_a_corrupted_or_mismatched_payload_is_refused_by_name(wan_pack, host_b, cli_models, start_image):
    graph = winner_graph(cli_models)
    graphs = split_graph(graph, SPLIT, "fp32")
    stage_a = fill(graphs.stage_a, Overrides(image=wan_pack.add_input(start_image)))
    [path] = wan_pack.output_files(wan_pack.run(stage_a, timeout=600), "latents")
    payload = path.read_bytes()
    host_b.add_input(start_image)

    corrupted = bytearray(payload)
    corrupted[-10] ^= 0x40
    assert "checksum mismatch" in _stage_b_error(host_b, graph, bytes(corrupted), "corrupt.wlat")
    message = _stage_b_error(host_b, winner_graph(cli_models, seed=SEED + 1), payload, "seed.wlat")
    assert f"belongs to another run: seed {SEED} (this run: {SEED + 1})" in message
    message = _stage_b_error(host_b, winner_graph(cli_models, steps=6), payload, "split.wlat", split=3)
    assert f"total steps {STEPS} (this run: 6); split step {SPLIT} (this run: 3)" in message
    message = _stage_b_error(host_b, winner_graph(cli_models, width=48), payload, "shape.wlat")
    assert "latent shape [1, 16, 2, 4, 4] (this run: [1, 16, 2, 4, 6])" in message
    message = _stage_b_error(host_b, winner_graph(cli_models, sampler="euler"), payload, "sampler.wlat")
    assert "sampling 'uni_pc simple cfg 1' (this run: 'euler simple cfg 1')" in message
    other_shift = winner_graph(cli_models)
    other_shift["3"]["inputs"]["shift"] = 5.0   # the same key, another schedule: sigma 1 first at any shift, then not
    message = _stage_b_error(host_b, other_shift, payload, "shift.wlat")
    assert re.search(r"payload wan_accel/shift.wlat: call 2 is at sigma [0-9.]+ here, [0-9.]+ in stage A; stage A "
                     r"recorded 2 prediction\(s\) before step 2\. Use the same sampler_name, scheduler, model \(its "
                     r"shift\) and cfg on both stages", message), message

    stage_b = fill(graphs.stage_b, Overrides(image="start.png"))
    stage_b[graphs.import_id]["inputs"]["payload"] = "wan_accel/never_uploaded.wlat"
    with pytest.raises(PromptRejected, match="payload 'wan_accel/never_uploaded.wlat' is not in the input folder"):
        host_b.queue(stage_b)


def test_cli_split_run_writes_the_video_of_the_unsplit_run(wan_pack, host_b, cli_models, start_image,
                                                              reference, tmp_path):
    out = tmp_path / "out"
    args = ["run", "--split-at", str(SPLIT), "--server", wan_pack.url, "--server", host_b.url, "--transfer", "fp32",
            "--image", str(start_image), "--prompt", PROMPT, "--seed", str(SEED), "--out", str(out), *TINY,
            *cli_models]
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wan_accel", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {done.returncode}]\n"
          f"{done.stdout}{done.stderr}")
    assert done.returncode == 0
    [video] = sorted(out.glob("*.mp4"))
    assert np.array_equal(read_frames(video)[0], reference["video"])
    assert f"stage A on {wan_pack.url}, stage B on {host_b.url}, fp32 transfer, seed {SEED}" in done.stdout
    [size] = re.findall(r"latent payload (\d+) bytes \(fp32\) carried in", done.stdout)
    assert 0 < int(size) - SPLIT * 4 * reference["latent"].numel() < 600 and f"saved {video}" in done.stdout
    assert f"Split Sampler (steps 0..1): step {STEPS}/{STEPS}" in done.stderr
    assert f"Split Sampler (steps 2..end): step {STEPS}/{STEPS}" in done.stderr
