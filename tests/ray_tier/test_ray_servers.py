"""``wan-accel bench`` over servers you run: two real ComfyUI hosts (CPU, one thread each) with the tiny winner of
``test_ray_bench.py``, each wrapped by one Ray worker (two or more ``--server`` always run on Ray).

Proven here: without ``--ray`` the CLI starts a Ray on this machine and both hosts share the batch, an unreachable
address in the list is reported and checked again, and every sample runs exactly once (``results.json``, one video
each, and the prompts each worker queued in its server's ``/history``); ``--split-at 2`` over the pair runs stage A
on the first host and stage B on the second, gives the frames of ``wan-accel run --split-at 2`` over the same pair,
and resumes without running anything again; killing one host by its PID during its second sample finishes the batch on
the other, with no sample lost or run twice (last: it kills a host of the module's pair). ``-s`` prints the
transcripts.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.comfy_server import ComfyServer
from wan_accel.quality.video_io import read_frames

from .conftest import ONE_THREAD
from .test_ray_bench import TINY, finish, pairs_csv, results_of, run_cli, start_cli, start_image  # noqa: F401

AUDIT = re.compile(r"^server (\S+): its server's /history holds (\d+) finished prompt\(s\) \((.*)\), none twice$")


@pytest.fixture(scope="module")
def hosts(ray_models, tmp_path_factory: pytest.TempPathFactory):
    """Two hosts with our pack and the same tiny model files, each computing on one thread."""
    base, _ = ray_models
    started = []
    try:
        for name in ("a", "b"):
            server = ComfyServer(base_dir=tmp_path_factory.mktemp(f"given_{name}"), env={**os.environ, **ONE_THREAD})
            for folder in ("diffusion_models", "text_encoders", "clip_vision", "vae"):
                for model in (base / "models" / folder).iterdir():
                    server.add_model(folder, model)
            started.append(server.start())
        yield started
    finally:
        for server in started:
            server.stop()


def name_of(server: ComfyServer) -> str:
    return server.url.split("://", 1)[1]


def bench_args(urls: list[str], pairs: Path, out: Path, flags: list[str]) -> list[str]:
    return ["bench", *[arg for url in urls for arg in ("--server", url)], "--pairs", str(pairs), "--out", str(out),
            *TINY, *flags]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def finished_once(transcript: str, out: Path, count: int) -> dict[str, list[str]]:
    """Every sample finished once on the driver, is in results.json once with one video; returns the samples of each
    server's audit line (the prompts its worker queued)."""
    results = results_of(out)
    assert [(r["id"], r["ok"]) for r in results] == [(f"s{i}", True) for i in range(count)]
    finished = [line.split()[2] for line in transcript.splitlines()
                if re.match(r"sample \d+/\d+: s\d [\d.]+ s on ", line)]
    assert sorted(finished) == [f"s{i}" for i in range(count)], "each sample finished once on the driver"
    assert sorted((out / "videos").iterdir()) == sorted(Path(r["outputs"][0]) for r in results), "one video each"
    return {m.group(1): m.group(3).split(", ") for line in transcript.splitlines() if (m := AUDIT.match(line))}


def test_two_servers_share_a_batch_on_a_local_ray_and_an_unreachable_one_is_checked_again(hosts, ray_models,
                                                                                          start_image, tmp_path):
    _, flags = ray_models
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "bench"
    code, transcript = run_cli(bench_args([hosts[0].url, dead, hosts[1].url], pairs_csv(tmp_path / "pairs.csv",
                                                                                         start_image, 4, 50),
                                          out, flags))
    assert code == 0
    dead_name = dead.split("://", 1)[1]
    assert (f"server {dead_name} left out for now (checked again while the batch runs): cannot reach ComfyUI at "
            f"{dead} (connection refused)") in transcript
    assert re.search(r"^Ray start-up: [\d.]+ s to 2 ready worker\(s\)$", transcript, re.MULTILINE)
    audits = finished_once(transcript, out, 4)
    assert sorted(audits) == sorted(name_of(h) for h in hosts)
    assert sorted(audits[name_of(hosts[0])] + audits[name_of(hosts[1])]) == [f"s{i}" for i in range(4)]
    results = results_of(out)
    assert {r["server"] for r in results} == {name_of(h) for h in hosts}, "both hosts took samples"
    for host in hosts:
        count = sum(r["server"] == name_of(host) for r in results)
        mean = sum(r["seconds"] for r in results if r["server"] == name_of(host)) / count
        assert f"server {name_of(host)}: {count} sample(s) this run, mean {mean:.2f} s/sample" in transcript
    assert f"server {dead_name}: 0 sample(s) this run, mean n/a" in transcript
    assert all(h.is_running() for h in hosts), "the servers you run are left running"


def test_split_over_a_given_pair_gives_the_frames_of_run_split_and_resumes(hosts, ray_models, ray_address,
                                                                            start_image, tmp_path):
    _, flags = ray_models
    first, second = hosts
    out, pairs = tmp_path / "bench", pairs_csv(tmp_path / "pairs.csv", start_image, 2, 60)
    args = [*bench_args([first.url, second.url], pairs, out, flags), "--steps", "4", "--split-at", "2", "--ray",
            ray_address]
    code, transcript = run_cli(args)
    assert code == 0
    assert (f"split at step 2, fp32 transfer: stage A on {name_of(first)}, stage B on {name_of(second)}"
            in transcript)
    audits = finished_once(transcript, out, 2)
    assert audits == {name_of(first): ["s0", "s1"], name_of(second): ["s0", "s1"]}, "each stage once on its host"
    saved = results_of(out)
    assert {(r["stage_a"], r["stage_b"], r["server"]) for r in saved} == {(name_of(first), name_of(second),
                                                                           name_of(second))}
    code, _ = run_cli(["run", "--server", first.url, "--server", second.url, "--split-at", "2", "--image",
                       str(start_image), "--prompt", "a cat walks on the beach", "--seed", "60", "--out",
                       str(tmp_path / "run"), *TINY, "--steps", "4", *flags])
    assert code == 0
    [video] = list((tmp_path / "run").rglob("*.mp4"))
    # the decoded frames: a video's bytes also hold the prompt, whose output names differ
    bench_frames, run_frames = read_frames(Path(saved[0]["outputs"][0]))[0], read_frames(video)[0]
    assert bench_frames.shape == (5, 32, 32, 3) and np.array_equal(bench_frames, run_frames), "s0: run's frames"
    code, again = run_cli(args)
    assert code == 0 and "resuming: 2 finished sample(s)" in again and results_of(out) == saved


def test_killing_one_server_mid_batch_finishes_on_the_other_with_nothing_lost_or_run_twice(hosts, ray_models,
                                                                                           start_image, tmp_path):
    _, flags = ray_models
    survivor, victim = hosts
    out = tmp_path / "bench"
    args = bench_args([survivor.url, victim.url], pairs_csv(tmp_path / "pairs.csv", start_image, 4, 70), out, flags)
    t0 = time.monotonic()
    proc = start_cli(args)
    seen, taken, killed_during = [], [], None
    for line in proc.stdout:
        seen.append(line)
        started = re.fullmatch(rf"sample \d/4: (s\d) on {re.escape(name_of(victim))}", line.strip())
        if started:
            taken.append(started.group(1))
        if killed_during is None and len(taken) == 2:   # during its second sample: it has finished one
            killed_during = taken[1]
            time.sleep(1.0)
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=30)
            seen.append(f"[test] killed the host at {victim.url} during sample {killed_during}\n")
    transcript = finish(proc, seen, args, t0)
    assert killed_during is not None, "the second host took two samples"
    assert proc.returncode == 0
    assert re.search(rf"^server {re.escape(name_of(victim))} stopped answering during sample {killed_during} \(.*\); "
                     rf"re-queued for another server \(retry 1 of 2\)$", transcript, re.MULTILINE)
    audits = finished_once(transcript, out, 4)
    results = {r["id"]: r for r in results_of(out)}
    assert results[killed_during]["server"] == name_of(survivor), "the sample in flight when it died ran on the other"
    assert [i for i, r in results.items() if r["server"] == name_of(victim)] == taken[:1], "what it finished is kept"
    assert killed_during in audits[name_of(survivor)] and sorted(audits[name_of(survivor)]) == sorted(
        i for i, r in results.items() if r["server"] == name_of(survivor)), "the survivor ran each of its samples once"
