"""Hostile or odd input to the command line gives one line naming the thing and the fix, before anything is queued:
an API workflow node without ``inputs``, ``--set`` with NaN or infinity, a node type that ComfyUI 0.33 reports
missing in its own reply shape; passwords in server addresses never shown; two benches sharing one results file."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.support.fake_comfy import FakeComfy
from wan_accel.batch.samples import Sample, SampleResult
from wan_accel.batch.results import ResultsWriter
from wan_accel.cli import main
from wan_accel.errors import mask_secrets

GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "WanAccelLoadDiTGGUF", "inputs": {"unet_name": "other.gguf", "compute_dtype": "auto"}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["4", 0]}},
    "11": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["5", 0], "seed": 0}},
    "13": {"class_type": "WanAccelTextureColour", "inputs": {"saturation": 1.0}},
    "15": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "wan_accel/x"}},
}
# ComfyUI 0.33.0's reply to POST /prompt for an unknown class (execution.py validate_prompt, server.py post_prompt)
MISSING_TYPE_033 = {"error": {"type": "missing_node_type",
                              "message": "Node 'WanAccelTextureColour' not found. The custom node may not be installed.",
                              "details": "Node ID '#13'",
                              "extra_info": {"node_id": "13", "class_type": "WanAccelTextureColour",
                                             "node_title": "WanAccelTextureColour"}},
                    "node_errors": {}}


@pytest.fixture
def fake():
    server = FakeComfy()
    yield server
    server.close()


def _run(server: str, tmp_path: Path, graph: dict, *extra: str) -> int:
    workflow, image = tmp_path / "mine.api.json", tmp_path / "cat.png"
    workflow.write_text(json.dumps(graph))
    image.write_bytes(b"\x89PNG")
    return main(["run", "--server", server, "--workflow", str(workflow), "--image", str(image), "--prompt", "a cat",
                 "--seed", "5", "--out", str(tmp_path / "out"), *extra])


def test_a_node_without_inputs_is_one_line_before_anything_is_sent(fake, tmp_path, capsys):
    graph = {**GRAPH, "13": {"class_type": "WanAccelTextureColour"}}
    assert _run(fake.url, tmp_path, graph) == 2
    err = capsys.readouterr().err
    assert err.startswith("wan-accel: error: ") and len(err.splitlines()) == 1
    assert "node #13 has no inputs object" in err and "Export (API)" in err
    assert fake.requests == []


@pytest.mark.parametrize("value", ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "[1.0, NaN]"])
def test_set_with_nan_or_infinity_is_refused_before_queueing(fake, tmp_path, capsys, value):
    assert _run(fake.url, tmp_path, GRAPH, "--set", f"13.saturation={value}") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wan-accel: error: --set '13.saturation={value}': {value} is not a finite number")
    assert len(err.splitlines()) == 1 and fake.requests == []


def test_set_with_a_finite_number_still_reaches_the_graph(fake, tmp_path):
    fake.ws_messages = [{"type": "execution_success", "data": {"prompt_id": "p1"}}]
    assert _run(fake.url, tmp_path, GRAPH, "--set", "13.saturation=1.5") == 0
    queued = json.loads(next(body for _, path, body in fake.requests if path == "/prompt"))["prompt"]
    assert queued["13"]["inputs"]["saturation"] == 1.5


def test_a_missing_node_type_on_comfyui_033_is_exit_4_with_the_fix(fake, tmp_path, capsys):
    fake.prompt_reply = (400, MISSING_TYPE_033)
    assert _run(fake.url, tmp_path, GRAPH) == 4
    err = capsys.readouterr().err
    assert err.strip() == ("wan-accel: error: the server has no node type WanAccelTextureColour (node #13): install "
                           "or update wan-accel in ComfyUI/custom_nodes and restart ComfyUI (its log says why it "
                           "failed to import, if it did)")


def test_mask_secrets_hides_only_the_password():
    assert mask_secrets("at http://user:pass%40w0rd@host:8188/x and https://me:x:y@h") == \
        "at http://user:***@host:8188/x and https://me:***@h"
    assert mask_secrets("http://host:8188 user@example.org") == "http://host:8188 user@example.org"


def test_a_password_in_the_server_address_is_never_printed(tmp_path, capsys):
    assert _run("http://user:s3cret@127.0.0.1:9", tmp_path, GRAPH) == 3
    err = capsys.readouterr().err
    assert "cannot reach ComfyUI at http://user:***@127.0.0.1:9" in err and "s3cret" not in err


def test_a_password_in_the_server_address_never_reaches_results_json(fake, tmp_path, capsys):
    fake.object_info.update({name: {"input": {}} for name in ("LoadImage", "CLIPTextEncode", "KSampler", "SaveVideo",
                                                             "WanAccelTextureColour")})
    fake.prompt_reply = (500, "boom")
    server = fake.url.replace("http://", "http://user:s3cret@")
    (tmp_path / "x.png").write_bytes(b"png")
    (tmp_path / "pairs.csv").write_text("image,prompt\nx.png,a cat\n")
    workflow = tmp_path / "mine.api.json"
    workflow.write_text(json.dumps(GRAPH))
    code = main(["bench", "--server", server, "--workflow", str(workflow), "--pairs", str(tmp_path / "pairs.csv"),
                 "--out", str(tmp_path / "out"), "--retries", "0"])
    captured = capsys.readouterr()
    saved = (tmp_path / "out" / "results.json").read_text()
    assert code == 1 and "/prompt answered HTTP 500" in saved
    assert "user:***@" in saved and "s3cret" not in saved
    assert "s3cret" not in captured.out + captured.err


def _result(sample_id: str) -> SampleResult:
    return SampleResult.failure(Sample(sample_id, Path("x.png"), "p"), "e", None)


def test_two_benches_sharing_one_results_file_keep_every_result(tmp_path):
    path, config, per_bench = tmp_path / "results.json", {"workflow": "winner"}, 40
    benches = [[Sample(f"{name}{i:02d}", Path("x.png"), "p") for i in range(per_bench)] for name in "ab"]
    writers = [ResultsWriter(path, config, samples) for samples in benches]
    errors: list[BaseException] = []

    def bench(writer: ResultsWriter, samples: list[Sample]) -> None:
        try:
            for sample in samples:
                writer.record(_result(sample.id))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=bench, args=pair) for pair in zip(writers, benches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    saved = [item["id"] for item in json.loads(path.read_text())["samples"]]
    assert sorted(saved) == sorted(s.id for samples in benches for s in samples)
    assert not list(tmp_path.glob("*.tmp"))
