"""wan-accel score on real video files with stand-in metrics: jobs, resume, the table, the final score, refusals."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from wan_accel import cli
from wan_accel.batch.results import summarise
from wan_accel.batch.samples import SampleResult
from wan_accel.errors import UsageError
from wan_accel.quality import scoring
from wan_accel.quality.jobs import ScoreJob, check_jobs, find_jobs
from wan_accel.quality.metric import MetricValue
from wan_accel.quality.scores_file import ScoresFile
from wan_accel.quality.weights import MissingWeights, WeightSpec, locate

av = pytest.importorskip("av")


def _write_video(path: Path, frames: np.ndarray, fps: int = 16) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


class MeanBrightness:
    """A stand-in metric: the mean pixel value / 255, and whether the image arrived cropped to the video."""

    needs_image = True

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def measure(self, video):
        self.calls.append((self.name, video.path.name, None if video.image is None else video.image.shape))
        return MetricValue(float(video.frames.mean()) / 255.0, {"to_image": [0.5] * len(video.frames)})


@pytest.fixture
def fake_metrics(monkeypatch):
    calls: list = []
    monkeypatch.setattr(scoring, "weight_specs", lambda names: [])
    monkeypatch.setattr(scoring, "load_metric", lambda name, device, weights: MeanBrightness(name, calls))
    monkeypatch.setattr(scoring, "pick_device", lambda device: "cpu")
    return calls


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    videos, images = tmp_path / "videos", tmp_path / "images"
    videos.mkdir(), images.mkdir()
    for i, level in enumerate((64, 128)):
        _write_video(videos / f"v{i}.mp4", np.full((5, 32, 48, 3), level, dtype=np.uint8))
        Image.fromarray(np.zeros((100, 100, 3), dtype=np.uint8)).save(images / f"v{i}.png")
    return videos, images


def test_score_a_folder_prints_the_table_and_the_final_score(tmp_path, fake_metrics, capsys):
    videos, images = _folder(tmp_path)
    code = cli.main(["score", "--videos", str(videos), "--images", str(images), "--seconds", "50",
                     "--metrics", "subject,background,smoothness,imaging"])
    out = capsys.readouterr().out
    assert code == 0
    saved = json.loads((videos / "scores.json").read_text())
    assert saved["metrics"] == ["subject", "background", "smoothness", "imaging"]
    assert saved["samples"]["v0"]["indices"]["imaging"] == pytest.approx(64 / 255, abs=2 / 255)
    # every index about (64 + 128) / 2 / 255, speed score 1.0 under 60 s
    expected = 0.2 * (4 * 96 / 255 + 1.0)
    assert saved["summary"]["final"] == pytest.approx(expected, abs=0.01)
    assert f"final score {saved['summary']['final']:.4f} = 0.2 x" in out
    assert "speed score 1 (mean 50.00 s per video)" in out
    # the 100x100 image reached the metrics cropped to the 48:32 video: 100 wide, 67 high
    assert {shape for _, _, shape in fake_metrics} == {(67, 100, 3)}


def test_score_resumes_and_refuses_a_file_of_other_metrics(tmp_path, fake_metrics, capsys):
    videos, images = _folder(tmp_path)
    args = ["score", "--videos", str(videos), "--images", str(images), "--metrics", "imaging"]
    assert cli.main(args) == 0
    first = len(fake_metrics)
    assert cli.main(args) == 0
    assert len(fake_metrics) == first   # nothing scored twice
    assert "2 video(s) already scored" in capsys.readouterr().err
    assert cli.main(["score", "--videos", str(videos), "--images", str(images), "--metrics", "dynamic"]) == 2
    assert "holds scores of the metrics imaging" in capsys.readouterr().err


def test_refusals_come_before_any_network_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scoring, "load_metric", lambda *a: pytest.fail("a network loaded"))
    videos, _ = _folder(tmp_path)
    assert cli.main(["score", "--videos", str(videos)]) == 2
    assert "compare each video with its input image, and there is none for: v0, v1" in capsys.readouterr().err
    assert cli.main(["score", "--videos", str(tmp_path / "nothing")]) == 2
    assert cli.main(["score", "--videos", str(videos), "--metrics", "sharpness"]) == 2
    assert "unknown metric(s) sharpness" in capsys.readouterr().err
    spec = WeightSpec("imaging", "musiq.pth", 100.0, "https://example.org/musiq.pth", "non-commercial", "~/cache")
    monkeypatch.setattr(scoring, "weight_specs", lambda names: [spec])
    assert cli.main(["score", "--videos", str(videos), "--metrics", "imaging", "--weights", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert f"metric imaging needs musiq.pth (100 MB, licence: non-commercial); download it from " \
           f"https://example.org/musiq.pth into {tmp_path}" in err


def test_jobs_from_a_results_file_take_its_images_and_times(tmp_path):
    video = _write_video(tmp_path / "a.mp4", np.zeros((3, 16, 16, 3), dtype=np.uint8))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"samples": [
        {"id": "a", "ok": True, "outputs": [str(video)], "image": "a.png", "seconds": 70.5},
        {"id": "b", "ok": False, "outputs": [], "image": "b.png", "seconds": None}]}))
    (job,) = find_jobs(results, None, None)
    assert job == ScoreJob("a", video, Path("a.png"), 70.5)
    assert find_jobs(results, None, 30.0)[0].seconds == 30.0
    with pytest.raises(UsageError, match="--images is for a folder"):
        find_jobs(results, tmp_path, None)
    with pytest.raises(UsageError, match="there is none for: a"):
        check_jobs([job], needs_image=True)
    with pytest.raises(MissingWeights, match="pass --weights DIR"):
        locate(WeightSpec("dynamic", "raft.pth", 20.0, "src", "BSD-3-Clause", str(tmp_path / "cache")), None)


def test_concurrent_writers_keep_every_record(tmp_path):
    path = tmp_path / "scores.json"
    files = [ScoresFile(path, ["imaging"]) for _ in range(2)]

    def add(k: int) -> None:
        for i in range(10):
            files[k].add({"id": f"{k}-{i}", "indices": {"imaging": 0.5}, "seconds": 10.0})

    threads = [threading.Thread(target=add, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = json.loads(path.read_text())
    assert len(saved["samples"]) == 20 and saved["summary"]["videos"] == 20


def test_the_bench_summary_gives_the_final_score_when_all_four_indices_are_there():
    def result(i: int, seconds: float) -> SampleResult:
        return SampleResult(f"s{i}", True, seconds, 0.0, None, 1, [], None, "i.png", "p", "now",
                            {"subject": 0.9711, "background": 0.9761, "smoothness": 0.9884, "imaging": 0.7246})
    lines = summarise([result(0, 80.0), result(1, 90.0)], 0).lines()
    # the winner's published indices: 0.2 x 4.5602 = 0.91204 (published 0.9121, from unrounded indices)
    assert "final score 0.9120 = 0.2 x (subject + background + smoothness + imaging + speed score)" in lines
    partial = summarise([SampleResult("s", True, 80.0, 0.0, None, 1, [], None, "i", "p", "now", {"imaging": 0.7})],
                        0).lines()
    assert not any(line.startswith("final score") for line in partial)
