"""Runs a Triton ahead-of-time compilation script in a fresh interpreter, for tests that check GPU builds on a CPU.

AOT compilation to a CUDA target needs no GPU, but it must not run under ``TRITON_INTERPRET=1`` (which the Triton
unit tests set for themselves), so the script runs in a child process without it, the repo root on its path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PRELUDE = "import sys\nsys.path.insert(0, sys.argv[1])\n"


def run_aot_script(script: str, timeout: float = 300) -> object:
    """The JSON that ``script`` prints on its last line; fails with the child's error output when it fails."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", PRELUDE + script, str(REPO_ROOT)], env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])
