"""The output files of a finished prompt and where the client saves them.

A history entry names each file; the name is the server's, so only its last component is used and a download never
leaves its folder (``../../x`` and ``/etc/x`` are saved as ``x``). A file is written to a private ``.part`` and
renamed once complete, to a name no other file has (``x_00001_-1.mp4`` next to an existing ``x_00001_.mp4``) unless
overwriting is asked for. The output folder is checked before anything is queued, so a bad ``--out`` never costs a
generation.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from .errors import MalformedReply, UsageError

MAX_NUMBERED = 9999   # numbered names tried next to a taken one before giving up


@dataclass(frozen=True)
class OutputFile:
    """A file a node reported in its UI output."""

    node_id: str
    filename: str
    subfolder: str
    folder_type: str

    @property
    def server_path(self) -> str:
        """Where the file stays on the server, for messages: ``output/<subfolder>/<filename>``."""
        return "/".join(part for part in (self.folder_type, self.subfolder, self.filename) if part)


def outputs_of(history: Mapping[str, Any], where: str = "history entry") -> tuple[list[OutputFile],
                                                                                   dict[str, list[str]]]:
    """Files (``output`` type only; ``temp`` previews are skipped) and text outputs, per node, of a history entry;
    a ``MalformedReply`` when the entry does not have the host's shape."""
    outputs = history.get("outputs", {})
    if not isinstance(outputs, Mapping):
        raise MalformedReply(where, f"its outputs are {type(outputs).__name__}, not an object")
    files, texts = [], {}
    for node_id in sorted(outputs, key=lambda k: (len(k), k)):
        node_outputs = outputs[node_id]
        if not isinstance(node_outputs, Mapping):
            raise MalformedReply(where, f"the outputs of node #{node_id} are {type(node_outputs).__name__}, not an "
                                        f"object")
        for key, items in node_outputs.items():
            if not isinstance(items, list):
                continue
            if key == "text":
                texts[node_id] = [str(item) for item in items]
                continue
            for item in items:
                if isinstance(item, Mapping) and "filename" in item and item.get("type", "output") == "output":
                    filename, subfolder = item["filename"], item.get("subfolder", "")
                    if not isinstance(filename, str) or not isinstance(subfolder, str):
                        raise MalformedReply(where, f"node #{node_id} names a file that is not text: {item!r:.200}")
                    files.append(OutputFile(node_id, filename, subfolder, "output"))
    return files, texts


def safe_name(filename: str) -> str | None:
    """The last component of a server's file name (``../../x.mp4`` -> ``x.mp4``, ``C:\\a\\x.mp4`` -> ``x.mp4``),
    None when nothing usable is left (empty, ``..``, a NUL byte)."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    return None if name in ("", ".", "..") or "\x00" in name else name


def prepare_out_dir(path: Path, flag: str = "--out") -> Path:
    """Creates ``path`` if needed and writes a scratch file in it; a ``UsageError`` naming it and the fix when it is
    a file or cannot be written. Called before anything is queued."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder; give a folder path (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".wan-accel-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path} cannot be written to ({exc.strerror or exc}); give a folder you can write "
                         f"to, or fix its permissions") from None
    return path


def save(chunks: Iterable[bytes], dest: Path, overwrite: bool = False) -> Path:
    """Writes ``chunks`` to a private ``.part`` next to ``dest``, then gives it ``dest``'s name, or the first free
    numbered name (``stem-1.ext``, ``stem-2.ext`` ...) when that is taken and ``overwrite`` is False. Whatever
    raises while writing (a body cut short, a full disk) leaves no ``.part`` behind."""
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")  # private: two writers never share it
    handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            for chunk in chunks:
                stream.write(chunk)
        if overwrite:
            os.replace(partial, dest)
            return dest
        return _rename_to_free_name(partial, dest)
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)


def _rename_to_free_name(partial: Path, dest: Path) -> Path:
    """Renames ``partial`` to ``dest`` or its first free numbered name; the name is claimed with an exclusive
    create first, so two processes saving into one folder never take the same name."""
    for number in range(MAX_NUMBERED + 1):
        candidate = dest if number == 0 else dest.with_name(f"{dest.stem}-{number}{dest.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        os.replace(partial, candidate)
        return candidate
    raise UsageError(f"{dest.parent} already holds {dest.name} and {MAX_NUMBERED} numbered copies of it; move them "
                     f"away, or pass --overwrite to replace {dest.name}")
