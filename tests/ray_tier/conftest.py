"""Ray test tier: ``wan-accel bench --ray`` on a Ray started on this machine by this session, with real ComfyUI hosts.

Needs ``ray`` in the test Python (the ``ray`` extra), ``COMFYUI_PATH`` (0.33.0 at least) and ``COMFYUI_PYTHON``
(the host's interpreter, which writes the tiny model files): without them every test here is skipped, with the
reason. Fixtures (session-scoped):

* ``ray_models`` -> (base folder, CLI flags): a ``--comfyui-base`` with our pack linked in and the tiny Wan 2.1
  files of ``tests/support/tiny_cli_models``;
* ``ray_address`` -> the address of a Ray this session starts (2 CPUs, no dashboard) for the CLI's
  ``--ray ADDRESS``; its workers (and their servers) compute on one thread each.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.comfy_server import REPO_ROOT, ComfyServer

RAY_DIR = Path(__file__).resolve().parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _skip_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed: Ray tier skipped (pip install 'wan-accel[ray]')"
    if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
        return "COMFYUI_PATH and COMFYUI_PYTHON are not both set: Ray tier skipped (a ComfyUI checkout and its Python)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    for item in items:
        if reason is not None and RAY_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def ray_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A base folder with our pack and the tiny model files, written by the host's Python (the VAE writer takes its
    key layout from the host's own Wan VAE)."""
    base = tmp_path_factory.mktemp("ray_base")
    layout = ComfyServer(base_dir=base)   # only its folder layout: custom_nodes/wan_accel -> this repository
    done = subprocess.run([os.environ["COMFYUI_PYTHON"], "-m", "tests.support.tiny_cli_models",
                           str(layout.models_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return base, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def ray_address() -> str:
    """A Ray on this machine, owned by this session: 2 CPUs, no dashboard; shut down at the end."""
    import ray

    saved = {name: os.environ.get(name) for name in ONE_THREAD}
    os.environ.update(ONE_THREAD)   # the raylet's workers, and the servers they start, inherit it
    try:
        context = ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
                           log_to_driver=False, logging_level="WARNING")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield context.address_info["address"]
    finally:
        ray.shutdown()
