"""Starts a ComfyUI folder as a private headless server on a free loopback port, and always stops it.

``wan-accel run --comfyui DIR`` uses it so a fresh machine needs no server started by hand; the batch runner's workers
can reuse it (one ``LocalComfyUI`` per worker). GPU or CPU is decided by the server's own Python (the torch ComfyUI
will run), so a client without torch, or a ``--comfyui-python`` with another torch, still gets the right flag.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from .errors import UsageError, WanAccelError

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 300.0       # seconds: importing torch and every custom-node pack on a slow CPU takes minutes
PROGRESS_EVERY = 10.0       # seconds between "still starting" lines
STOP_TIMEOUT = 15.0         # seconds a terminated server gets before it is killed
TAIL_LINES = 40
CUDA_PROBE = "import torch, sys; sys.stdout.write('1' if torch.cuda.is_available() else '0')"


class ServerStartFailed(WanAccelError):
    """The ComfyUI this command started exited or did not answer in time; the message ends with its log's tail."""

    exit_code = 3


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on at ``host`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def has_cuda(python: str) -> bool:
    """Whether torch in ``python`` (the interpreter that will run ComfyUI) sees a CUDA GPU."""
    try:
        done = subprocess.run([python, "-c", CUDA_PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run {python} to ask its torch for a GPU ({exc}); pass --comfyui-python with the "
                         f"Python that has ComfyUI's requirements installed") from None
    if done.returncode != 0 or done.stdout not in ("0", "1"):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{python} cannot import torch ({last}): install ComfyUI's requirements into it "
                         f"(pip install -r COMFYUI_DIR/requirements.txt) or pass --comfyui-python")
    return done.stdout == "1"


def _die_with_parent() -> None:  # runs in the child before exec, Linux only
    """Ask the kernel to SIGTERM the server if this client dies without stopping it (kill -9)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(process: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> None:
    """Terminates ``process`` if it still runs, and kills it if it has not exited ``timeout`` s later."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class LocalComfyUI:
    """One ComfyUI process on 127.0.0.1 that this object starts and stops (by its own PID).

    ``with LocalComfyUI(Path("ComfyUI")) as server: ComfyClient(server.url)...`` - headless, ``--cpu`` where the
    server's torch sees no GPU (``cpu=None``; True/False forces it), outputs under ``base_dir`` (default: the
    folder itself). Its log goes to a temporary file, deleted after a clean stop or Ctrl-C, kept after an error.
    """

    def __init__(self, comfyui_dir: Path, python: str | None = None, cpu: bool | None = None,
                 base_dir: Path | None = None, extra_args: Sequence[str] = (),
                 progress: Callable[[str], None] | None = None, start_timeout: float = START_TIMEOUT):
        self.comfyui_dir = Path(comfyui_dir).resolve()
        if not (self.comfyui_dir / "main.py").is_file():
            raise UsageError(f"--comfyui {comfyui_dir}: no main.py there, so not a ComfyUI folder; clone it with "
                             f"git clone https://github.com/comfyanonymous/ComfyUI and pass that folder")
        self.python = python or sys.executable
        if shutil.which(self.python) is None:
            raise UsageError(f"--comfyui-python {self.python}: no such executable")
        self.base_dir = Path(base_dir).resolve() if base_dir is not None else None
        if self.base_dir is not None and not self.base_dir.is_dir():
            raise UsageError(f"--comfyui-base {base_dir}: not a folder; create it (ComfyUI makes models/, input/, "
                             f"output/ and custom_nodes/ inside)")
        self.cpu = cpu
        self.extra_args = list(extra_args)
        self.progress = progress or (lambda line: None)
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the started server."""
        if self.port is None:
            raise RuntimeError("LocalComfyUI.url before start()")
        return f"http://{LOOPBACK}:{self.port}"

    def command(self, port: int, cpu: bool) -> list[str]:
        """The command line that starts the server (run in the ComfyUI folder)."""
        cmd = [self.python, "main.py", "--listen", LOOPBACK, "--port", str(port), "--disable-auto-launch"]
        if cpu:
            cmd.append("--cpu")
        if self.base_dir is not None:
            cmd += ["--base-directory", str(self.base_dir)]
        return cmd + self.extra_args

    def start(self) -> "LocalComfyUI":
        """Starts the server and waits (bounded, with progress lines) until ``GET /system_stats`` answers."""
        if self.process is not None:
            raise RuntimeError("LocalComfyUI already started")
        cpu = self.cpu if self.cpu is not None else not has_cuda(self.python)
        self.port = free_port()
        cmd = self.command(self.port, cpu)
        self.log_path = Path(tempfile.mkdtemp(prefix="wan-accel-comfyui-")) / "comfyui.log"
        self.progress(f"starting ComfyUI from {self.comfyui_dir} on {self.url}{' (CPU only: no GPU)' if cpu else ''}"
                      f", log {self.log_path}")
        posix = {}
        if os.name == "posix":   # own session: Ctrl-C reaches the client, which interrupts the prompt, then stops it
            posix = {"start_new_session": True,
                     "preexec_fn": _die_with_parent if sys.platform.startswith("linux") else None}
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.process = subprocess.Popen(cmd, cwd=self.comfyui_dir, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                            **posix)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(keep_log=True)
            raise
        return self

    def _wait_ready(self) -> None:
        started = last_note = time.monotonic()
        while not self._answers():
            if self.process.poll() is not None:
                raise ServerStartFailed(f"ComfyUI exited with code {self.process.returncode} while starting "
                                        f"({self.log_path}):\n{self.log_tail()}")
            now = time.monotonic()
            if now - started > self.start_timeout:
                raise ServerStartFailed(f"ComfyUI did not answer on {self.url} within {self.start_timeout:.0f} s "
                                        f"({self.log_path}):\n{self.log_tail()}")
            if now - last_note >= PROGRESS_EVERY:
                self.progress(f"  still starting ({now - started:.0f} s)")
                last_note = now
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - started
        self.progress(f"ComfyUI answered after {self.startup_seconds:.1f} s")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/system_stats", timeout=2.0) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines the server wrote (stdout and stderr), as one block."""
        if self.log_path is None or not self.log_path.is_file():
            return "  (no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in text)

    def stop(self, keep_log: bool = False) -> None:
        """Terminates the server (kills it after ``STOP_TIMEOUT`` s); deletes its log unless ``keep_log``."""
        process, self.process = self.process, None
        stop_process(process)
        if not keep_log and self.log_path is not None:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)
            self.log_path = None

    def __enter__(self) -> "LocalComfyUI":
        return self.start()

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.stop(keep_log=exc_type is not None and issubclass(exc_type, Exception))   # not for Ctrl-C
