"""``wan-accel bench`` on Ray without Ray installed (``--ray``, or two or more ``--server``) and with flags that do
not go together: one readable message each, before any work; the plain client never imports Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wan_accel.cli import main
from wan_accel.ray_cli import RAY_MISSING, SERVERS_NEED_RAY

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def pairs(tmp_path: Path) -> Path:
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "a.txt").write_text("a cat", encoding="utf-8")
    return tmp_path


@pytest.fixture()
def comfyui(tmp_path: Path) -> Path:
    folder = tmp_path / "ComfyUI"
    folder.mkdir()
    (folder / "main.py").write_text("", encoding="utf-8")
    return folder


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_a_missing_ray_is_one_message_with_the_install_command(pairs, comfyui, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError(name="ray")
    code, err = run(["bench", "--ray", "--ray-workers", "2", "--comfyui", str(comfyui), "--pairs", str(pairs),
                     "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err == f"wan-accel: error: {RAY_MISSING}\n"
    assert "pip install 'wan-accel[ray]'" in err


def test_two_servers_without_ray_are_one_message_before_any_work(pairs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    listing = tmp_path / "servers.txt"
    listing.write_text("127.0.0.1:8190\n", encoding="utf-8")
    code, err = run(["bench", "--server", "127.0.0.1:8188", "--server", "127.0.0.1:8189", "--servers", str(listing),
                     "--pairs", str(pairs), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err == f"wan-accel: error: {SERVERS_NEED_RAY.format(count=3)}\n"
    assert "pip install 'wan-accel[ray]', or give one --server" in err
    assert not (tmp_path / "out").exists(), "nothing was prepared"


@pytest.mark.parametrize("extra, message", [
    (["--ray", "--server", "http://127.0.0.1:8188", "--comfyui", "X", "--ray-workers", "2"],
     "--ray with --server/--servers runs one Ray worker per given server, and --comfyui, --ray-workers start "
     "servers of their own: pass one or the other"),
    (["--ray"], "--ray needs --comfyui DIR"),
    (["--comfyui", "X", "--ray-workers", "2"], "--comfyui, --ray-workers need --ray"),
    (["--ray", "--comfyui", "/nonexistent"], "--comfyui /nonexistent: no main.py there"),
])
def test_flags_that_do_not_go_together_are_usage_errors(extra, message, pairs, tmp_path, capsys):
    code, err = run(["bench", "--pairs", str(pairs), "--out", str(tmp_path / "out"), *extra], capsys)
    assert code == 2 and message in err


def test_the_plain_client_never_imports_ray():
    done = subprocess.run([sys.executable, "-c", "import sys, wan_accel.cli, wan_accel.ray_cli, "
                                                 "wan_accel.batch.one_server; print('ray' in sys.modules)"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
