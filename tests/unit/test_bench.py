"""The batch runner on one server: the challenge's speed table, pairs from a folder or CSV, results written atomically
after each sample, resume after an interruption, fatal errors, and the quality-metric hook. Its faults:
``test_bench_one_server.py``; several servers on Ray: ``test_bench_ray_servers.py``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_accel.batch.samples import FirstFramePSNR, JobOutcome, Sample, load_pairs, speed_score
from wan_accel.batch.one_server import run_one_server
from wan_accel.batch.results import read_results, summarise
from wan_accel.errors import ExecutionFailed, MissingModel, MissingModelFile, UsageError

CONFIG = {"workflow": "wan21_i2v_480p_winner", "steps": 8}


@pytest.mark.parametrize("seconds, score", [
    (0.0, 1.0), (59.99, 1.0), (60.0, 0.9), (119.9, 0.9), (120.0, 0.8), (239.9, 0.8), (240.0, 0.75),
    (359.9, 0.75), (360.0, 0.7), (600.0, 0.7), (600.01, None), (3600.0, None)])
def test_speed_score_follows_the_challenge_table(seconds, score):
    assert speed_score(seconds) == score


def _image(path: Path) -> Path:
    path.write_bytes(b"png")
    return path


def test_pairs_from_a_folder_and_from_a_csv(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name, prompt in (("b_dog", "a dog runs\n"), ("a_cat", "a cat sits")):
        _image(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(prompt)
    (folder / "notes.md").write_text("ignored")
    assert load_pairs(folder) == [Sample("a_cat", folder / "a_cat.png", "a cat sits"),
                                  Sample("b_dog", folder / "b_dog.png", "a dog runs")]
    _image(tmp_path / "x.jpg")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,prompt,seed,id,negative\nx.jpg,first,5,,\nx.jpg,second,,two,blurry\n")
    assert load_pairs(csv_path) == [Sample("x", (tmp_path / "x.jpg").resolve(), "first", 5, None),
                                    Sample("two", (tmp_path / "x.jpg").resolve(), "second", None, "blurry")]


@pytest.mark.parametrize("content, message", [
    ("img,text\nx.jpg,a\n", "columns image and prompt"),
    ("image,prompt\nnope.jpg,a\n", "line 2: image nope.jpg not found"),
    ("image,prompt,seed\nx.jpg,a,-3\n", "line 2: seed '-3' is not a non-negative integer"),
    ("image,prompt\nx.jpg,a\nx.jpg,b\n", "sample ids must be unique, repeated: x"),
])
def test_bad_pairs_are_usage_errors_naming_the_line(tmp_path, content, message):
    _image(tmp_path / "x.jpg")
    (tmp_path / "pairs.csv").write_text(content)
    with pytest.raises(UsageError, match=message):
        load_pairs(tmp_path / "pairs.csv")


def test_a_folder_image_without_its_prompt_file_is_named(tmp_path):
    _image(tmp_path / "lonely.png")
    with pytest.raises(UsageError, match="missing: lonely.txt"):
        load_pairs(tmp_path)


def _samples(tmp_path: Path, count: int) -> list[Sample]:
    return [Sample(f"s{i}", _image(tmp_path / f"s{i}.png"), f"prompt {i}", seed=i) for i in range(count)]


class Lines:
    """A display that keeps the messages and ignores progress."""

    def __init__(self, report=None):
        self.report = report if report is not None else (lambda line: None)

    def message(self, text):
        self.report(text)

    def progress(self, server, sample_id, event):
        pass

    def overall(self, done, failed, total):
        pass


class OneServer:
    """A server that always passes its check and generates with ``generate``."""

    name = "local"

    def __init__(self, generate):
        self.generate_sample = generate

    def check(self):
        pass

    def generate(self, sample, progress):
        return self.generate_sample(sample)


def run_bench(samples, generate, results_path, config, metrics=(), report=None):
    """The batch on one server whose jobs ``generate`` runs; messages go to ``report``."""
    return run_one_server(samples, OneServer(generate), results_path, config, metrics, Lines(report))


class FakeGenerate:
    """Generates instantly with scripted times; ``fail`` maps sample id -> exception to raise."""

    def __init__(self, tmp_path: Path, seconds: dict[str, float], fail: dict[str, Exception] | None = None):
        self.tmp_path, self.seconds, self.fail, self.calls = tmp_path, seconds, fail or {}, []

    def __call__(self, sample: Sample) -> JobOutcome:
        self.calls.append(sample.id)
        if sample.id in self.fail:
            raise self.fail[sample.id]
        video = self.tmp_path / f"{sample.id}.mp4"
        video.write_bytes(b"mp4")
        return JobOutcome(self.seconds[sample.id], 0.25, self.seconds[sample.id] - 0.5, [video])


def test_results_are_saved_after_each_sample_and_a_resume_skips_finished_ones(tmp_path):
    samples = _samples(tmp_path, 3)
    results_path = tmp_path / "out" / "results.json"
    seen_on_disk = []

    class InterruptAtThird(FakeGenerate):
        def __call__(self, sample):
            seen_on_disk.append([s["id"] for s in json.loads(results_path.read_text())["samples"]]
                                if results_path.exists() else [])
            if sample.id == "s2":
                raise KeyboardInterrupt
            return super().__call__(sample)

    failing = ExecutionFailed("11", "KSampler", "RuntimeError", "out of memory")
    with pytest.raises(KeyboardInterrupt):
        run_bench(samples, InterruptAtThird(tmp_path, {"s0": 50.0}, {"s1": failing}), results_path, CONFIG,
                  report=lambda line: None)
    assert seen_on_disk == [[], ["s0"], ["s0", "s1"]]
    saved = read_results(results_path, CONFIG)
    assert (saved["s0"].ok, saved["s0"].seconds, saved["s0"].queue_seconds, saved["s0"].host_seconds,
            saved["s0"].seed) == (True, 50.0, 0.25, 49.5, 0)
    assert (saved["s1"].ok, saved["s1"].error) == (False, "node #11 KSampler failed: RuntimeError: out of memory")
    assert not list(results_path.parent.glob("*.tmp"))

    lines: list[str] = []
    generate = FakeGenerate(tmp_path, {"s1": 100.0, "s2": 150.0})
    summary = run_bench(samples, generate, results_path, CONFIG, report=lines.append)
    assert generate.calls == ["s1", "s2"], "the successful s0 is skipped, the failed s1 is retried"
    assert lines[:3] == [f"resuming: 1 finished sample(s) in {results_path} are skipped", "server local: ready",
                         "sample 2/3: s1"]
    assert read_results(results_path, CONFIG)["s0"] == saved["s0"]
    assert {r.server for r in read_results(results_path, CONFIG).values()} == {"local"}
    assert summary.lines()[:3] == ["3/3 samples succeeded, 0 failed, 1 already done (skipped)",
                                   "mean time per sample: 100.00 s -> speed score 0.9",
                                   "server local: 2 sample(s) this run, mean 125.00 s/sample"]


def test_results_of_another_configuration_are_not_mixed_in(tmp_path):
    results_path = tmp_path / "results.json"
    run_bench(_samples(tmp_path, 1), FakeGenerate(tmp_path, {"s0": 1.0}), results_path, CONFIG,
              report=lambda line: None)
    with pytest.raises(UsageError, match=r"another configuration \(differs in: steps\)"):
        run_bench(_samples(tmp_path, 1), FakeGenerate(tmp_path, {}), results_path, {**CONFIG, "steps": 4})


def test_an_error_that_would_repeat_on_every_sample_stops_the_bench(tmp_path):
    missing = MissingModel([MissingModelFile("wan.gguf", "diffusion_models", "2", "Load Wan DiT (GGUF)", "unet_name")])
    generate = FakeGenerate(tmp_path, {}, {"s0": missing})
    with pytest.raises(MissingModel):
        run_bench(_samples(tmp_path, 2), generate, tmp_path / "results.json", CONFIG, report=lambda line: None)
    assert generate.calls == ["s0"] and not (tmp_path / "results.json").exists()


class ConstantMetric:
    name = "constant"

    def unavailable_reason(self):
        return None

    def measure(self, sample, outcome):
        return 30.0 + int(sample.id[1:])


class SeveralValuesMetric:
    name = "several"

    def unavailable_reason(self):
        return None

    def measure(self, sample, outcome):
        return {"subject": 0.5 + int(sample.id[1:]) / 10, "imaging": outcome.seconds / 1000}


class UnavailableMetric:
    name = "vbench"

    def unavailable_reason(self):
        return "its model weights are not downloaded"

    def measure(self, sample, outcome):
        raise AssertionError("never called")


def test_quality_metrics_plug_in_and_report_why_they_cannot_run(tmp_path):
    lines: list[str] = []
    summary = run_bench(_samples(tmp_path, 2), FakeGenerate(tmp_path, {"s0": 700.0, "s1": 10.0}),
                        tmp_path / "results.json", CONFIG, [ConstantMetric(), UnavailableMetric()], lines.append)
    assert "metric vbench skipped: its model weights are not downloaded" in lines
    assert summary.metric_means == {"constant": 30.5}
    assert summary.lines()[1:4] == ["mean time per sample: 355.00 s -> speed score 0.75",
                                    "1 sample(s) took over 600 s (invalid)", "mean constant: 30.500"]
    assert summarise([], 0).lines() == ["0/0 samples succeeded, 0 failed", "mean time: n/a (no successful sample)"]


def test_a_metric_with_several_values_records_each_under_its_own_name(tmp_path):
    summary = run_bench(_samples(tmp_path, 2), FakeGenerate(tmp_path, {"s0": 100.0, "s1": 300.0}),
                        tmp_path / "results.json", CONFIG, [SeveralValuesMetric()], [].append)
    saved = json.loads((tmp_path / "results.json").read_text())["samples"]
    assert [s["metrics"] for s in saved] == [{"subject": 0.5, "imaging": 0.1}, {"subject": 0.6, "imaging": 0.3}]
    assert summary.metric_means == pytest.approx({"subject": 0.55, "imaging": 0.2})


def test_first_frame_psnr_compares_the_video_start_with_the_image(tmp_path):
    av = pytest.importorskip("av")
    np = pytest.importorskip("numpy")
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "start.png")
    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=16, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        for frame in (image, 255 - image):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    sample = Sample("v", tmp_path / "start.png", "p")
    assert FirstFramePSNR().unavailable_reason() is None
    outcome = JobOutcome(1.0, 0.0, None, [video])
    assert FirstFramePSNR().measure(sample, outcome) > 40.0  # lossless h264 up to the RGB<->YUV round trip
    inverted = tmp_path / "inverted.png"
    Image.fromarray(255 - image).save(inverted)
    assert FirstFramePSNR().measure(Sample("v", inverted, "p"), outcome) < 10.0
