"""``wan-accel bench --ray`` end to end: two Ray workers, each owning a real ComfyUI host (CPU, one thread), share
a batch of the shipped winner workflow on the tiny models (32x32, 5 frames, 2 steps, fp32 VAE).

Each output equals, byte for byte, the same sample run by ``bench --server`` on one server. Killing one worker's
ComfyUI by its PID mid-sample, or the worker's own process, finishes the batch with every sample exactly once:
once in ``results.json``, one video, and one successful prompt over the live servers' ``/history``. Ctrl-C (SIGINT
to the CLI) keeps what finished, stops the servers, and the same command resumes the rest. ``-s`` prints the
transcripts.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.comfy_server import REPO_ROOT, ComfyServer
from tests.support.processes import pid_alive
from tests.support.tiny_models import write_random_image

from .conftest import ONE_THREAD

CLI = [sys.executable, "-m", "wan_accel"]
TINY = ["--width", "32", "--height", "32", "--length", "5", "--steps", "2", "--set", "9.precision=fp32"]
PROMPTS = ["a cat walks on the beach", "a dog runs in the forest", "a bird flies over the sea",
           "a horse jumps a fence", "a fish swims in a pond", "a fox sleeps in the snow"]
WORKER_LINE = re.compile(r"^(worker \d) on node (\S+) \(pid (\d+), CPU only\): ComfyUI (\S+) \(pid (\d+)\)")
AUDIT_LINE = re.compile(r"^(worker \d): its server's /history holds (\d+) finished prompt\(s\) \((.*)\), none twice$")


@pytest.fixture(scope="module")
def start_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_image(tmp_path_factory.mktemp("ray_inputs") / "start.png", 64, 64, seed=3)


def pairs_csv(path: Path, image: Path, count: int, first_seed: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "prompt", "seed"])
        for i in range(count):
            writer.writerow([f"s{i}", str(image), PROMPTS[i], first_seed + i])
    return path


def ray_args(ray: str, base: Path, flags: list[str], pairs: Path, out: Path) -> list[str]:
    return ["bench", "--ray", ray, "--ray-workers", "2", "--comfyui", os.environ["COMFYUI_PATH"], "--comfyui-python",
            os.environ["COMFYUI_PYTHON"], "--comfyui-base", str(base), "--pairs", str(pairs), "--out", str(out),
            *TINY, *flags]


def _default_sigint() -> None:
    """Runs in the child before exec: Ctrl-C must reach it even when pytest runs with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)},
                            preexec_fn=_default_sigint)


def finish(proc: subprocess.Popen, seen: list[str], args: list[str], t0: float) -> str:
    rest, _ = proc.communicate(timeout=600)
    transcript = "".join(seen) + rest
    print(f"\n$ wan-accel {' '.join(args)}   [{time.monotonic() - t0:.1f} s, exit {proc.returncode}]\n{transcript}")
    return transcript


def run_cli(args: list[str]) -> tuple[int, str]:
    t0 = time.monotonic()
    proc = start_cli(args)
    transcript = finish(proc, [], args, t0)
    return proc.returncode, transcript


def results_of(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))["samples"]


def assert_each_sample_once(transcript: str, out: Path, count: int) -> dict[str, list[str]]:
    """results.json, the videos and the live servers' /history agree: every sample ran exactly once. Returns the
    samples of each worker's audit line."""
    ids = [f"s{i}" for i in range(count)]
    results = results_of(out)
    assert [(r["id"], r["ok"]) for r in results] == [(i, True) for i in ids]
    finished = [line.split()[2] for line in transcript.splitlines() if re.match(r"sample \d+/\d+: s\d [\d.]+ s on ", line)]
    assert sorted(finished) == ids, "each sample finished once on the driver"
    assert sorted((out / "videos").iterdir()) == sorted(Path(r["outputs"][0]) for r in results), "one video each"
    audits = {m.group(1): m.group(3).split(", ") for line in transcript.splitlines()
              if (m := AUDIT_LINE.match(line))}
    assert sorted(audits) == ["worker 1", "worker 2"]
    return audits


def test_two_workers_share_six_samples_and_match_one_server_byte_for_byte(ray_address, ray_models, start_image,
                                                                          tmp_path):
    base, flags = ray_models
    pairs, out = pairs_csv(tmp_path / "pairs.csv", start_image, 6, 10), tmp_path / "ray"
    code, transcript = run_cli(ray_args(ray_address, base, flags, pairs, out))
    assert code == 0
    assert re.search(r"Ray start-up: [\d.]+ s to 2 ready worker\(s\)", transcript)
    workers = [m.groups() for line in transcript.splitlines() if (m := WORKER_LINE.match(line))]
    assert [w[0] for w in workers] == ["worker 1", "worker 2"] and workers[0][3] != workers[1][3]
    audits = assert_each_sample_once(transcript, out, 6)
    assert sorted(audits["worker 1"] + audits["worker 2"]) == [f"s{i}" for i in range(6)], "none twice over both"
    results = results_of(out)
    assert {r["worker"] for r in results} == {"worker 1", "worker 2"}
    for result in results:
        [worker] = [w for w in workers if w[0] == result["worker"]]
        assert result["node"] == worker[1] and result["server"] == worker[3].split("://", 1)[1]
        assert result["id"] in audits[result["worker"]]
    assert "-> parallel speed-up " in transcript and not any(pid_alive(int(w[4])) for w in workers)

    reference = ComfyServer(base_dir=tmp_path / "one_server", env={**os.environ, **ONE_THREAD})
    for folder in ("diffusion_models", "text_encoders", "clip_vision", "vae"):
        for model in (base / "models" / folder).iterdir():
            reference.add_model(folder, model)
    with reference.start():
        code, _ = run_cli(["bench", "--server", reference.url, "--pairs", str(pairs), "--out", str(tmp_path / "one"),
                           *TINY, *flags])
    assert code == 0
    one = {r["id"]: Path(r["outputs"][0]).read_bytes() for r in results_of(tmp_path / "one")}
    assert {r["id"]: Path(r["outputs"][0]).read_bytes() for r in results} == one, "same bytes as on one server"


def kill_mid_sample(ray_address: str, ray_models, start_image: Path, tmp_path: Path, target: str) -> tuple[str, Path,
                                                                                                        tuple]:
    """Runs 4 samples; once worker 2 has run 2 s of its first sample, SIGKILLs its server (``target`` "server") or
    its own process ("worker"). Returns the transcript, the out folder and worker 2's first (pid, server pid)."""
    base, flags = ray_models
    pairs, out = pairs_csv(tmp_path / "pairs.csv", start_image, 4, 20), tmp_path / "ray"
    args = ray_args(ray_address, base, flags, pairs, out)
    t0 = time.monotonic()
    proc = start_cli(args)
    seen, victim, killed = [], None, None
    for line in proc.stdout:
        seen.append(line)
        match = WORKER_LINE.match(line)
        if match and match.group(1) == "worker 2" and victim is None:
            victim = (int(match.group(3)), int(match.group(5)))
        started = re.fullmatch(r"sample \d/4: (s\d) on worker 2", line.strip())
        if started and killed is None:
            time.sleep(2.0)
            pid = victim[0] if target == "worker" else victim[1]
            os.kill(pid, signal.SIGKILL)
            killed = started.group(1)
            seen.append(f"[test] SIGKILL to worker 2's {target} (pid {pid}) during sample {killed}\n")
    transcript = finish(proc, seen, args, t0)
    assert killed is not None and proc.returncode == 0
    return transcript, out, (killed, *victim)


@pytest.mark.parametrize("target", ["server", "worker"])
def test_killing_a_worker_or_its_server_mid_sample_runs_every_sample_exactly_once(target, ray_address, ray_models,
                                                                                 start_image, tmp_path):
    transcript, out, (killed, worker_pid, server_pid) = kill_mid_sample(ray_address, ray_models, start_image,
                                                                        tmp_path, target)
    restarted = re.search(r"^worker 2 was restarted by Ray \(its server or process died\): now worker 2 on node \S+ "
                          r"\(pid (\d+), CPU only\): ComfyUI \S+ \(pid (\d+)\)$", transcript, re.MULTILINE)
    assert restarted, "Ray restarted the worker, with a fresh server"
    assert int(restarted.group(1)) != worker_pid and int(restarted.group(2)) != server_pid
    assert not pid_alive(server_pid), "the killed worker's server is gone"
    audits = assert_each_sample_once(transcript, out, 4)
    assert sorted(audits["worker 1"] + audits["worker 2"]) == [f"s{i}" for i in range(4)], "none twice over both"
    [result] = [r for r in results_of(out) if r["id"] == killed]
    assert result["worker"] == "worker 2", "Ray retried the sample on the restarted worker"
    assert killed in audits["worker 2"]


def test_ctrl_c_keeps_what_finished_and_the_same_command_resumes(ray_models, start_image, tmp_path):
    base, flags = ray_models
    out = tmp_path / "ray"
    args = ray_args("local", base, flags, pairs_csv(tmp_path / "pairs.csv", start_image, 4, 30), out)
    t0 = time.monotonic()
    proc = start_cli(args)
    seen, servers = [], []
    for line in proc.stdout:
        seen.append(line)
        if match := WORKER_LINE.match(line):
            servers.append(int(match.group(5)))
        if line.startswith("[#") and " 1/4 done" in line:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            seen.append("[test] SIGINT to the CLI\n")
            break
    transcript = finish(proc, seen, args, t0)
    assert proc.returncode == 130 and "run the same command to resume" in transcript
    first = results_of(out)
    assert 1 <= len(first) < 4 and all(r["ok"] for r in first)
    assert len(servers) == 2 and not any(pid_alive(pid) for pid in servers), "both servers stopped"

    code, resumed = run_cli(args)
    assert code == 0
    assert f"resuming: {len(first)} finished sample(s)" in resumed
    results = results_of(out)
    assert [(r["id"], r["ok"]) for r in results] == [(f"s{i}", True) for i in range(4)]
    assert [r for r in results if r["id"] in {f["id"] for f in first}] == first, "finished ones kept as they were"
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(Path(r["outputs"][0]).name for r in results)
