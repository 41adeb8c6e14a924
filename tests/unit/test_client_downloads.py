"""Downloads stay inside ``--out`` and never replace a file: a server's ``../../x`` or absolute name is saved under
its last component, a taken name gets the next numbered one (the earlier file's bytes unchanged, by checksum), a
planted symlink is not followed, ``--overwrite`` replaces on request, a body cut short leaves nothing behind and
says where the video still is, and a bad ``--out`` is a one-line error before anything reaches the server. Against
the scripted fake ComfyUI on 127.0.0.1 (``tests/support/fake_comfy.py``)."""
from __future__ import annotations

import copy
import hashlib
import json
import threading
from pathlib import Path

import pytest

from tests.support.fake_comfy import API_GRAPH as GRAPH
from tests.support.fake_comfy import HISTORY_OK, FakeComfy, fake_for_graph
from wan_accel.cli import main
from wan_accel.client import ComfyClient
from wan_accel.client_files import OutputFile, save
from wan_accel.errors import MalformedReply



@pytest.fixture
def fake():
    server = fake_for_graph([{"type": "execution_success", "data": {"prompt_id": "p1"}}])
    yield server
    server.close()


def _with_files(*names: str) -> dict:
    history = copy.deepcopy(HISTORY_OK)
    history["outputs"]["15"]["images"] = [{"filename": name, "subfolder": "wan_accel", "type": "output"}
                                          for name in names]
    return history


def _run(fake: FakeComfy, tmp_path: Path, out: Path, *extra: str) -> int:
    workflow, image = tmp_path / "mine.api.json", tmp_path / "cat.png"
    workflow.write_text(json.dumps(GRAPH))
    image.write_bytes(b"\x89PNG")
    return main(["run", "--server", fake.url, "--workflow", str(workflow), "--image", str(image), "--prompt", "a cat",
                 "--seed", "5", "--out", str(out), *extra])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_names_that_climb_out_or_are_absolute_are_saved_inside_out(fake, tmp_path, capsys):
    outside = tmp_path / "outside.mp4"
    fake.history = _with_files("../../escape.mp4", str(outside), "..\\..\\win.mp4", "a/b/../nested.mp4")
    out = tmp_path / "work" / "out"
    before = _tree(tmp_path)
    assert _run(fake, tmp_path, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["escape.mp4", "nested.mp4", "outside.mp4", "win.mp4"]
    assert (out / "escape.mp4").read_bytes() == b"video:wan_accel/../../escape.mp4", "the server's own name asked"
    created = _tree(tmp_path) - before - {"mine.api.json", "cat.png"}   # the run's own inputs
    assert created == {"work", "work/out", *(f"work/out/{n}" for n in ("escape.mp4", "nested.mp4", "outside.mp4",
                                                                        "win.mp4"))}
    assert not outside.exists()
    assert f"saved {out / 'escape.mp4'}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["..", "", "wan_accel/.."])
def test_a_name_with_no_file_in_it_is_refused_in_one_line(fake, tmp_path, name):
    with pytest.raises(MalformedReply, match="is not a file name; is it a ComfyUI server") as caught:
        ComfyClient(fake.url).download(OutputFile("15", name, "", "output"), tmp_path)
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []


def test_an_existing_file_is_never_replaced_without_overwrite(fake, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "x_00001_.mp4"
    earlier.write_bytes(b"the video of an earlier run")
    checksum = _sha(earlier)
    fake.history = _with_files("x_00001_.mp4")   # a server whose counter restarted names its video the same
    assert _run(fake, tmp_path, out) == 0
    assert _run(fake, tmp_path, out) == 0
    assert _sha(earlier) == checksum
    assert sorted(p.name for p in out.iterdir()) == ["x_00001_-1.mp4", "x_00001_-2.mp4", "x_00001_.mp4"]
    assert (out / "x_00001_-1.mp4").read_bytes() == b"video:wan_accel/x_00001_.mp4"
    assert f"saved {out / 'x_00001_-2.mp4'}" in capsys.readouterr().out
    assert _run(fake, tmp_path, out, "--overwrite") == 0
    assert earlier.read_bytes() == b"video:wan_accel/x_00001_.mp4" and len(list(out.iterdir())) == 3


def test_a_planted_symlink_is_not_followed(fake, tmp_path):
    target = tmp_path / "precious.bin"
    target.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_00001_.mp4").symlink_to(target)
    saved = ComfyClient(fake.url).download(OutputFile("15", "x_00001_.mp4", "wan_accel", "output"), out)
    assert saved == out / "x_00001_-1.mp4" and target.read_bytes() == b"precious"


def test_writers_racing_for_one_name_each_get_their_own():
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        dest = Path(folder) / "v.mp4"
        saved: list[Path] = []
        threads = [threading.Thread(target=lambda i=i: saved.append(save([b"%d" % i] * 64, dest)))
                   for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(saved)) == 8 and {p.read_bytes() for p in saved} == {(b"%d" % i) * 64 for i in range(8)}
        assert sorted(p.name for p in Path(folder).iterdir()) == sorted(["v.mp4"] + [f"v-{n}.mp4" for n in range(1, 8)])


def test_a_download_cut_short_leaves_no_part_and_says_where_the_video_is(fake, tmp_path, capsys):
    fake.view_cut = 6
    out = tmp_path / "out"
    assert _run(fake, tmp_path, out) == 3
    err = capsys.readouterr().err
    assert err.startswith("wan-accel: error: GET ") and "the download was cut short" in err
    assert "the file is still on the server in output/wan_accel/x_00001_.mp4" in err
    assert len(err.splitlines()) == 1 and list(out.iterdir()) == []


@pytest.mark.parametrize("kind", ["a file", "under a file", "unwritable"])
def test_a_bad_out_is_one_line_before_anything_is_queued(fake, tmp_path, capsys, kind):
    (tmp_path / "taken").write_text("not a folder")
    out = {"a file": tmp_path / "taken", "under a file": tmp_path / "taken" / "out",
           "unwritable": Path("/sys")}[kind]   # sysfs takes no new file, not even from root
    assert _run(fake, tmp_path, out) == 2
    err = capsys.readouterr().err
    fix = "give a folder path" if kind == "a file" else "give a folder you can write to"
    assert err.startswith(f"wan-accel: error: --out {out} ") and fix in err and len(err.splitlines()) == 1
    assert not any(path in ("/prompt", "/upload/image") for _, path, _ in fake.requests)


def test_bench_checks_its_out_before_any_server(fake, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"png")
    (tmp_path / "pairs.csv").write_text("image,prompt\nx.png,a cat\n")
    (tmp_path / "taken").write_text("")
    assert main(["bench", "--server", fake.url, "--pairs", str(tmp_path / "pairs.csv"),
                 "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.startswith(f"wan-accel: error: --out {tmp_path / 'taken'} is a file, not a folder")
    assert fake.requests == []
