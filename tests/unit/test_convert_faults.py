"""The converter under faults and hostile paths: one line each, exit status 2 (130 for Ctrl-C), no ``.part`` left;
``--force`` never replaces a device node, a pipe, a folder or the source itself; integer-typed weights are refused."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import gguf
import pytest
import torch
from safetensors.torch import save_file

from tests.support.tiny_models import tiny_wan_i2v_state_dict, write_tiny_wan_i2v
from wan_accel.convert import main


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_tiny_wan_i2v(tmp_path_factory.mktemp("faults") / "tiny.safetensors")


def _convert(capsys, *argv: str) -> tuple[int, str]:
    code = main([*map(str, argv)])
    err = capsys.readouterr().err
    return code, err


def _one_line(err: str) -> str:
    """The one message line of stderr (progress bar lines aside); no traceback."""
    lines = [line for line in err.strip().splitlines() if "tensor/s]" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_missing_destination_folder_is_named_with_the_fix(source, tmp_path, capsys):
    code, err = _convert(capsys, source, tmp_path / "nope" / "out.gguf")
    assert code == 2
    assert _one_line(err) == (f"error: the folder {tmp_path / 'nope'} of out.gguf does not exist; create it "
                              f"(mkdir -p {tmp_path / 'nope'}) or choose another destination")


def test_a_folder_as_destination_is_refused_even_with_force(source, tmp_path, capsys):
    code, err = _convert(capsys, source, tmp_path, "--force")
    assert code == 2 and _one_line(err).startswith(f"error: {tmp_path} is a folder; give a file path")


@pytest.mark.parametrize("how", ["same path", "symlink", "hardlink"])
def test_the_source_as_destination_is_refused_even_with_force(source, tmp_path, capsys, how):
    before = source.read_bytes()
    destination = {"same path": source, "symlink": tmp_path / "link.gguf", "hardlink": tmp_path / "hard.gguf"}[how]
    if how == "symlink":
        destination.symlink_to(source)
    elif how == "hardlink":
        os.link(source, destination)
    code, err = _convert(capsys, source, destination, "--force")
    assert code == 2 and "is the source checkpoint itself" in _one_line(err)
    assert source.read_bytes() == before


def _char_device(tmp_path: Path) -> Path:
    """A null character device of our own in ``tmp_path`` (root), else /dev/null (which a user cannot replace): an
    unfixed converter run as root must never get to replace the machine's /dev/null."""
    node = tmp_path / "device.gguf"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return Path("/dev/null")
    return node


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_force_never_replaces_a_device_node_or_a_pipe(source, tmp_path, capsys, kind):
    if kind == "fifo":
        node = tmp_path / "pipe.gguf"
        os.mkfifo(node)
    else:
        node = _char_device(tmp_path)
    code, err = _convert(capsys, source, node, "--force")
    assert code == 2 and "is not a regular file" in _one_line(err)
    assert Path(node).exists() and not Path(node).is_file()
    assert not Path(f"{node}.part").exists()


def _fail_on_second_tensor(monkeypatch, error: BaseException) -> None:
    original, calls = gguf.GGUFWriter.write_tensor_data, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return original(self, *args, **kwargs)
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)


def test_a_full_disk_is_one_line_and_leaves_no_part(source, tmp_path, capsys, monkeypatch):
    _fail_on_second_tensor(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    destination = tmp_path / "out.gguf"
    code, err = _convert(capsys, source, destination)
    assert code == 2
    assert _one_line(err) == (f"error: cannot write {destination} (No space left on device); free space on its disk "
                              f"or choose another folder, then convert again")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_mid_write_is_exit_130_and_leaves_no_part(source, tmp_path, capsys, monkeypatch):
    _fail_on_second_tensor(monkeypatch, KeyboardInterrupt())
    destination = tmp_path / "out.gguf"
    code, err = _convert(capsys, source, destination)
    assert code == 130
    assert _one_line(err).startswith(f"interrupted: {destination} was not written and no .part is left")
    assert list(tmp_path.iterdir()) == []


def test_float_weights_relabelled_as_integers_are_refused_before_any_write(tmp_path, capsys):
    state = tiny_wan_i2v_state_dict()
    key = next(k for k in state if k.endswith("self_attn.q.weight"))
    state[key] = state[key].float().view(torch.int32)   # the same bytes, labelled I32
    relabelled = tmp_path / "relabelled.safetensors"
    save_file(state, str(relabelled))
    code, err = _convert(capsys, relabelled, tmp_path / "out.gguf")
    assert code == 2
    assert _one_line(err).startswith(f"error: relabelled.safetensors: tensor {key} is I32, but every Wan 2.1 DiT "
                                     f"weight is a float")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relabelled.safetensors"]
