"""The launcher behind ``wan-accel run --comfyui DIR``: the command line it builds (loopback, free port, headless,
--cpu from the server's Python), its bounded wait, the log tail on failure, and a server stopped on every exit.

"ComfyUI" here is a tiny ``main.py`` written per test: it records its arguments and pid, then, as ``mode`` says,
serves ``/system_stats`` (a CPU device) on the given port, exits with an error, or never listens.
"""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import pid_alive
from wan_accel import cli
from wan_accel.errors import UsageError
from wan_accel.launcher import LocalComfyUI, ServerStartFailed, free_port, has_cuda

FAKE_MAIN = '''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
json.dump({"argv": args, "pid": os.getpid(), "cwd": os.getcwd()}, open("started.json", "w"))
mode = open("mode").read().strip()
for i in range(100):
    print(f"import line {i}")
if mode == "fail":
    print("RuntimeError: fake ComfyUI cannot start")
    sys.exit(3)
if mode == "hang":
    time.sleep(600)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path != "/system_stats":
            print(f"fake ComfyUI: no route {self.path}")
            self.send_response(404); self.end_headers(); return
        body = json.dumps({"system": {"comfyui_version": "fake"}, "devices": [{"name": "cpu", "type": "cpu"}]})
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.end_headers()
        self.wfile.write(body.encode())
    do_POST = do_GET

print("fake ComfyUI listening")
HTTPServer((args[args.index("--listen") + 1], int(args[args.index("--port") + 1])), Handler).serve_forever()
'''


def fake_comfyui(folder: Path, mode: str = "serve") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(FAKE_MAIN, encoding="utf-8")
    (folder / "mode").write_text(mode, encoding="utf-8")
    return folder


def fake_python(folder: Path, probe_output: str, probe_status: int = 0) -> str:
    """An interpreter whose ``-c`` (the CUDA probe) prints ``probe_output``; anything else runs this Python."""
    path = folder / "python"
    path.write_text(f"#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then printf '%s' '{probe_output}' "
                    f"{'>&2' if probe_status else ''}; exit {probe_status}; fi\nexec {sys.executable} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def started(folder: Path) -> dict:
    return json.loads((folder / "started.json").read_text())


def test_free_port_is_bindable_on_loopback():
    import socket

    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_command_is_headless_on_loopback_with_cpu_and_base_only_when_asked(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    launcher = LocalComfyUI(comfy, python=sys.executable)
    assert launcher.command(8555, cpu=True) == [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", "8555",
                                                "--disable-auto-launch", "--cpu"]
    base = tmp_path / "base"
    base.mkdir()
    assert LocalComfyUI(comfy, base_dir=base).command(9000, cpu=False)[3:] == [
        "127.0.0.1", "--port", "9000", "--disable-auto-launch", "--base-directory", str(base)]
    assert LocalComfyUI(comfy).python == sys.executable   # the client's own Python by default


def test_starts_answers_on_its_port_and_stops_on_exit(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    notes: list[str] = []
    with LocalComfyUI(comfy, python=sys.executable, cpu=True, progress=notes.append) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(server.url + "/system_stats", timeout=5) as reply:
            assert json.load(reply)["devices"][0]["type"] == "cpu"
        seen = started(comfy)
        assert seen["argv"] == ["--listen", "127.0.0.1", "--port", str(server.port), "--disable-auto-launch", "--cpu"]
        assert Path(seen["cwd"]) == comfy.resolve()
        log = server.log_path
    assert not pid_alive(seen["pid"]) and not log.exists()   # stopped, and its log removed after a clean run
    assert notes[0].startswith(f"starting ComfyUI from {comfy.resolve()} on http://127.0.0.1:")
    assert "(CPU only: no GPU)" in notes[0] and notes[-1].startswith("ComfyUI answered after ")


@pytest.mark.parametrize("probe, flagged", [("0", True), ("1", False)])
def test_cpu_flag_follows_the_servers_own_torch(tmp_path, probe, flagged):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    python = fake_python(tmp_path, probe)
    assert has_cuda(python) is not flagged
    with LocalComfyUI(comfy, python=python):
        assert ("--cpu" in started(comfy)["argv"]) is flagged


def test_a_python_without_torch_is_refused_before_any_start(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    python = fake_python(tmp_path, "ModuleNotFoundError: No module named torch", probe_status=1)
    with pytest.raises(UsageError, match=r"cannot import torch \(ModuleNotFoundError: No module named torch\): "
                                         r"install ComfyUI's requirements"):
        LocalComfyUI(comfy, python=python).start()
    assert not (comfy / "started.json").exists()


def test_a_folder_without_main_py_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no main.py there, so not a ComfyUI folder; clone it"):
        LocalComfyUI(tmp_path)


def test_a_server_that_exits_at_start_shows_its_log_tail(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI", "fail")
    launcher = LocalComfyUI(comfy, python=sys.executable, cpu=True)
    with pytest.raises(ServerStartFailed) as failed:
        launcher.start()
    message = str(failed.value)
    assert "ComfyUI exited with code 3 while starting" in message
    assert message.endswith("  | RuntimeError: fake ComfyUI cannot start")
    assert "  | import line 100" not in message and "  | import line 61" in message   # the last 40 lines only
    assert launcher.log_path.is_file()   # kept for the user to read


def test_a_server_that_never_answers_is_stopped_after_the_timeout(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI", "hang")
    launcher = LocalComfyUI(comfy, python=sys.executable, cpu=True, start_timeout=1.5)
    with pytest.raises(ServerStartFailed, match=r"did not answer on http://127.0.0.1:\d+ within 2 s"):
        launcher.start()
    assert not pid_alive(started(comfy)["pid"]) and launcher.process is None


def test_ctrl_c_inside_stops_the_server_and_drops_its_log(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    with pytest.raises(KeyboardInterrupt):
        with LocalComfyUI(comfy, python=sys.executable, cpu=True) as server:
            log = server.log_path
            raise KeyboardInterrupt
    assert not pid_alive(started(comfy)["pid"]) and not log.exists()


def run_args(comfy: Path, tmp_path: Path, *extra: str) -> list[str]:
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    return ["run", "--comfyui", str(comfy), "--comfyui-python", sys.executable, "--image", str(image),
            "--prompt", "a cat", "--seed", "1", "--out", str(tmp_path / "out"), *extra]


def test_run_with_comfyui_stops_the_server_after_an_error_and_shows_the_log_tail(tmp_path, capsys):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    code = cli.main(run_args(comfy, tmp_path))
    err = capsys.readouterr().err
    assert code == 3   # the fake answers only /system_stats: the client's next call fails
    assert "fake ComfyUI: no route /object_info" in err and "last lines of the ComfyUI log (" in err
    # the fake lists only a CPU: the winner's fp16 VAE is flagged, with the --set that fixes it, before the job
    assert "warning: #9 Load Wan VAE (fp16): precision=fp16 on a CPU-only server" in err
    assert "-> use --set 9.precision=fp32" in err
    assert not pid_alive(started(comfy)["pid"])


def test_run_refuses_comfyui_with_server_and_a_missing_image_before_starting(tmp_path, capsys):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    assert cli.main(run_args(comfy, tmp_path, "--server", "http://127.0.0.1:8188")) == 2
    assert "pass only one of them" in capsys.readouterr().err
    args = run_args(comfy, tmp_path)
    args[args.index("--image") + 1] = str(tmp_path / "absent.png")
    assert cli.main(args) == 2
    assert f"image {tmp_path / 'absent.png'} does not exist" in capsys.readouterr().err
    assert not (comfy / "started.json").exists()
    assert cli.main(["run", "--comfyui-base", str(tmp_path), "--image", "x.png", "--prompt", "p"]) == 2
    assert "--comfyui-python and --comfyui-base need --comfyui DIR" in capsys.readouterr().err
