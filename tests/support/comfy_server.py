"""Run the real ComfyUI host as a subprocess for the host test tier.

``ComfyServer`` prepares a fresh ``--base-directory`` (``custom_nodes/<pack>`` is a symlink to
this repository, ``models/<folder>/`` holds the files a test provides, ``input/`` the images),
starts ``main.py --cpu`` on a free loopback port, talks to the HTTP API (``/object_info``,
``/prompt``, ``/history``) and stops the process it started, by its own PID.

Environment:

* ``COMFYUI_PATH`` - the ComfyUI checkout (the directory holding ``main.py``); required.
* ``COMFYUI_PYTHON`` - the interpreter that runs the host (default: ``sys.executable``).

Only the standard library is needed to run a server; ``read_latent`` needs safetensors + torch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from wan_accel.launcher import stop_process

__all__ = ["ComfyServer", "ComfyServerError", "PromptRejected", "ExecutionFailed",
           "REPO_ROOT", "PACK_DIR_NAME", "read_latent"]

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "wan_accel"

Writer = Callable[[Path], Any]
Source = Union[str, os.PathLike, Writer]


class ComfyServerError(RuntimeError):
    """The host did not start, died, or answered something unexpected."""


class PromptRejected(ComfyServerError):
    """``POST /prompt`` answered 400: the graph did not validate. ``node_errors`` is the host's dict."""

    def __init__(self, message: str, error: Any, node_errors: dict):
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors


class ExecutionFailed(ComfyServerError):
    """A queued prompt ended with status ``error``. ``details`` is the host's execution_error dict."""

    def __init__(self, message: str, details: dict, history: dict):
        super().__init__(message)
        self.details = details
        self.history = history


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_pdeathsig() -> None:  # runs in the child before exec (Linux only)
    """Ask the kernel to SIGTERM the host if the test process dies without cleaning up."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _format_node_errors(node_errors: dict) -> str:
    lines = []
    for node_id, info in (node_errors or {}).items():
        cls = info.get("class_type", "?")
        for err in info.get("errors", []):
            extra = err.get("extra_info") or {}
            where = f" (input {extra['input_name']})" if extra.get("input_name") else ""
            lines.append(f"  node {node_id} [{cls}]{where}: {err.get('message', '')}: {err.get('details', '')}")
        if not info.get("errors"):
            lines.append(f"  node {node_id} [{cls}]: {info}")
    return "\n".join(lines)


def read_latent(path: Union[str, os.PathLike]):
    """The ``latent_tensor`` of a ``.latent`` file written by the host's ``SaveLatent`` (a torch tensor)."""
    from safetensors.torch import load_file

    return load_file(str(path))["latent_tensor"]


class ComfyServer:
    """One ComfyUI host process on 127.0.0.1 with its own temporary base directory.

    Typical use::

        with ComfyServer() as srv:            # or srv = ComfyServer(); srv.add_model(...); srv.start()
            srv.add_model("diffusion_models", write_tiny_wan_i2v, "wan_tiny_i2v.safetensors")
            pid = srv.queue(graph)
            hist = srv.wait(pid, timeout=300)
            [latent_path] = srv.output_files(hist, "latents")

    Files may be added after the start: the host rescans a model folder when its mtime changes.
    """

    def __init__(self, comfyui_path: Union[str, os.PathLike, None] = None, python: Union[str, None] = None,
                 base_dir: Union[str, os.PathLike, None] = None, pack_root: Union[str, os.PathLike] = REPO_ROOT,
                 pack_dir_name: str = PACK_DIR_NAME, extra_args: Iterable[str] = (),
                 env: Union[dict, None] = None):
        comfyui_path = comfyui_path or os.environ.get("COMFYUI_PATH")
        if not comfyui_path:
            raise ComfyServerError("COMFYUI_PATH is not set and no comfyui_path was given")
        self.comfyui_path = Path(comfyui_path).resolve()
        if not (self.comfyui_path / "main.py").is_file():
            raise ComfyServerError(f"{self.comfyui_path} has no main.py: not a ComfyUI checkout")
        self.python = python or os.environ.get("COMFYUI_PYTHON") or sys.executable
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="comfy_base_")).resolve()
        self.models_dir, self.input_dir, self.output_dir, self.temp_dir = (
            self.base_dir / name for name in ("models", "input", "output", "temp"))
        self.pack_root = Path(pack_root).resolve()
        self.pack_dir_name = pack_dir_name
        self.extra_args = list(extra_args)
        self.env = env
        self.client_id = uuid.uuid4().hex
        self.port: Union[int, None] = None
        self.proc: Union[subprocess.Popen, None] = None
        self.log_path = self.base_dir / "comfyui.log"
        self._log_file = None
        self._prepare_base_dir()

    # ------------------------------------------------------------------ directories
    def _prepare_base_dir(self) -> None:
        for d in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base_dir / d).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / self.pack_dir_name
        if link.is_symlink() or link.exists():
            if not (link.is_symlink() and link.resolve() == self.pack_root):
                raise ComfyServerError(f"{link} exists and is not a link to {self.pack_root}")
        else:
            link.symlink_to(self.pack_root, target_is_directory=True)

    def _place(self, dest_dir: Path, src: Source, name: Union[str, None], link: bool = True) -> str:
        dest_dir.mkdir(parents=True, exist_ok=True)
        if callable(src):
            if not name:
                raise ValueError("a writer needs an explicit file name")
            dest = dest_dir / name
            src(dest)
            if not dest.is_file():
                raise ComfyServerError(f"writer {src!r} did not create {dest}")
        else:
            src = Path(src).resolve()
            if not src.is_file():
                raise FileNotFoundError(src)
            dest = dest_dir / (name or src.name)
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            if link:
                dest.symlink_to(src)  # the host lists linked model files like plain ones
            else:
                shutil.copyfile(src, dest)
        return dest.relative_to(dest_dir).as_posix()

    def add_model(self, folder: str, src: Source, name: Union[str, None] = None) -> str:
        """Put a model file under ``models/<folder>/``; returns the name to use in the graph.

        ``src`` is an existing file (linked in, renamed to ``name`` if given) or a callable
        ``writer(dest_path)`` that creates the file (``name`` required), e.g.
        ``add_model("loras", lambda p: write_tiny_wan_lora(p), "tiny_lora.safetensors")``.
        """
        return self._place(self.models_dir / folder, src, name)

    def add_input(self, src: Source, name: Union[str, None] = None) -> str:
        """Copy a file (e.g. an image) into ``input/``; returns the name for ``LoadImage``. A copy, not a link:
        ComfyUI 0.33 rejects input files whose real path lies outside ``input/`` ("Invalid image file")."""
        return self._place(self.input_dir, src, name, link=False)

    # ------------------------------------------------------------------ process
    @property
    def url(self) -> str:
        if self.port is None:
            raise ComfyServerError("server not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        """Start the host and wait until ``GET /system_stats`` answers."""
        if self.proc is not None:
            raise ComfyServerError("already started")
        self.port = _free_port()
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base_dir), *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            cmd, cwd=str(self.comfyui_path), stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, env=env,
            preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._close_log()
                raise ComfyServerError(f"ComfyUI exited with code {rc} during start-up.\n{self.log_tail()}")
            try:
                self._request("GET", "/system_stats", timeout=2.0)
                break
            except (urllib.error.URLError, ConnectionError, OSError, ComfyServerError):
                pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise ComfyServerError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s.\n"
                                       f"{self.log_tail()}")
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - t0
        return self

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the host process we started (by its PID), kill it if it does not exit."""
        stop_process(self.proc, timeout)
        self._close_log()

    def cleanup(self) -> None:
        """Stop, then delete the base directory if this object created it."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "ComfyServer":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ logs
    def log_text(self) -> str:
        """Everything the host wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def pack_import_error(self) -> Union[str, None]:
        """The host's report that our pack failed to import, with its traceback; None if none.

        Scans for ``Cannot import <path>/custom_nodes/<pack> module for custom nodes: <error>``
        (``nodes.py`` ``load_custom_node``; the traceback is logged just before it) and for the
        ``comfy_entrypoint`` failures the host logs without that line.
        """
        text = self.log_text()
        lines = text.splitlines()
        name = re.escape(self.pack_dir_name)
        pats = [re.compile(rf"Cannot import .*[/\\]{name} module for custom nodes"),
                re.compile(rf"Error while calling comfy_entrypoint in .*[/\\]{name}\b"),
                re.compile(rf"comfy_entrypoint in .*[/\\]{name} (is not callable|did not return)"),
                re.compile(rf"Skip .*[/\\]{name} module for custom nodes")]
        for i, line in enumerate(lines):
            if any(p.search(line) for p in pats):
                start = i
                # include the traceback logged right before the "Cannot import" line
                j = i - 1
                while j >= 0 and j >= i - 80:
                    if lines[j].startswith("Traceback (most recent call last):"):
                        start = j
                        break
                    j -= 1
                return "\n".join(lines[start:i + 1])
        return None

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        """``GET`` an API path (e.g. ``/queue``) and decode its JSON."""
        return self._request("GET", path, timeout=timeout)

    def system_stats(self) -> dict:
        return self._request("GET", "/system_stats")

    def object_info(self, node_class: Union[str, None] = None) -> dict:
        """``GET /object_info`` (all nodes) or ``/object_info/<class>`` (``{class: info}``)."""
        path = "/object_info" if node_class is None else "/object_info/" + urllib.parse.quote(node_class)
        return self._request("GET", path, timeout=60.0)

    def queue(self, graph: dict) -> str:
        """``POST /prompt`` an API-format graph; returns the prompt id.

        Raises :class:`PromptRejected` with the host's ``node_errors`` spelled out on HTTP 400.
        """
        if not self.is_running():
            raise ComfyServerError(f"ComfyUI is not running.\n{self.log_tail()}")
        try:
            out = self._request("POST", "/prompt", {"prompt": graph, "client_id": self.client_id})
        except urllib.error.HTTPError as e:
            raw = e.read().decode("utf-8", errors="replace")
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"error": raw, "node_errors": {}}
            error = payload.get("error")
            node_errors = payload.get("node_errors") or {}
            if isinstance(error, dict):
                head = f"{error.get('type', '')}: {error.get('message', '')} {error.get('details', '')}".strip()
            else:
                head = str(error)
            msg = f"ComfyUI rejected the prompt (HTTP {e.code}): {head}"
            if node_errors:
                msg += "\n" + _format_node_errors(node_errors)
            raise PromptRejected(msg, error, node_errors) from None
        return out["prompt_id"]

    def history(self, prompt_id: Union[str, None] = None) -> dict:
        path = "/history" if prompt_id is None else f"/history/{prompt_id}"
        return self._request("GET", path)

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> dict:
        """Poll ``/history/<id>`` until the prompt finished; returns its history entry.

        Raises :class:`ExecutionFailed` (host's exception type and message, failing node, its
        traceback and the log tail) if the status is ``error``; :class:`ComfyServerError` on
        timeout or if the host died.
        """
        t0 = time.monotonic()
        while True:
            entry = self.history(prompt_id).get(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    details: dict = {}
                    for ev, data in status.get("messages", []):
                        if ev in ("execution_error", "execution_interrupted"):
                            details = dict(data, event=ev)
                    tb = "".join(details.get("traceback") or [])
                    msg = (f"prompt {prompt_id} failed in node {details.get('node_id')} "
                           f"[{details.get('node_type')}]: {details.get('exception_type', details.get('event'))}: "
                           f"{details.get('exception_message', '')}\n{tb}\n{self.log_tail()}")
                    raise ExecutionFailed(msg, details, entry)
                if status.get("completed") or status.get("status_str") == "success":
                    return entry
            if not self.is_running():
                raise ComfyServerError(f"ComfyUI died while running prompt {prompt_id}.\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout:
                raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s.\n"
                                       f"{self.log_tail()}")
            time.sleep(poll)

    def run(self, graph: dict, timeout: float = 600.0) -> dict:
        """``queue`` + ``wait``."""
        return self.wait(self.queue(graph), timeout=timeout)

    def output_files(self, history: dict, kind: str = "latents", node_id: Union[str, None] = None) -> list[Path]:
        """Paths of the files a finished prompt reported under ``outputs[*][kind]``.

        ``kind`` is the UI key the saving node uses: ``"latents"`` (SaveLatent), ``"images"``
        (SaveImage, PreviewImage, SaveAnimatedWEBP), ``"gifs"``/``"videos"`` for video savers.
        Restrict to one node with ``node_id``. Order: node id order, then the node's own order.
        """
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        paths: list[Path] = []
        outputs = history.get("outputs", {})
        for nid in sorted(outputs, key=lambda s: (len(s), s)):
            if node_id is not None and nid != str(node_id):
                continue
            for item in outputs[nid].get(kind, []) or []:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                root = roots.get(item.get("type", "output"), self.output_dir)
                paths.append(root / item.get("subfolder", "") / item["filename"])
        return paths
