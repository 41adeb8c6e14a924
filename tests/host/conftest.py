"""Host test tier: tests that drive a real ComfyUI (``COMFYUI_PATH``) over its HTTP API.

Every test collected under ``tests/host`` is marked ``host`` and skipped, with a visible reason,
when ``COMFYUI_PATH`` is not set.

Fixtures (all session-scoped, one host process for the whole session):

* ``comfy_models`` -> ``dict[str, str]``: graph names of the tiny files installed in the base
  directory: ``{"dit": "wan_tiny_i2v.safetensors", "umt5": "umt5_tiny_stub.safetensors",
  "lora": "wan_tiny_lora.safetensors"}`` (folders diffusion_models / text_encoders / loras).
* ``comfy`` -> :class:`tests.support.comfy_server.ComfyServer`, started, with those files.
  It does NOT require our pack to import: tests of core host behaviour use it directly.
* ``wan_pack`` -> the same server, after asserting the host imported our pack
  (``custom_nodes/wan_accel``) without error. Every test of our nodes requests this one.

Graph builders: ``tests/support/graphs.py`` (``tiny_i2v_graph``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support import graphs
from tests.support.comfy_server import ComfyServer
from tests.support.tiny_models import write_tiny_wan_i2v, write_tiny_wan_lora, write_umt5_stub

HOST_DIR = Path(__file__).resolve().parent
SKIP_REASON = "COMFYUI_PATH is not set: host tier skipped (point it at a ComfyUI checkout)"


def _is_host_item(item: pytest.Item) -> bool:
    try:
        Path(str(item.path)).resolve().relative_to(HOST_DIR)
        return True
    except ValueError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=SKIP_REASON) if not os.environ.get("COMFYUI_PATH") else None
    for item in items:
        if _is_host_item(item):
            item.add_marker(pytest.mark.host)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_models() -> dict[str, str]:
    """Graph names of the tiny model files the ``comfy`` fixture installs."""
    return {"dit": graphs.DIT_NAME, "umt5": graphs.UMT5_NAME, "lora": graphs.LORA_NAME}


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory, comfy_models: dict[str, str]):
    """One ComfyUI host for the whole session, with the tiny DiT, umt5 stub and LoRA installed."""
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip(SKIP_REASON)
    base = tmp_path_factory.mktemp("comfy_base")
    srv = ComfyServer(base_dir=base)
    t0 = time.monotonic()
    srv.add_model("diffusion_models", write_tiny_wan_i2v, comfy_models["dit"])
    srv.add_model("text_encoders", write_umt5_stub, comfy_models["umt5"])
    srv.add_model("loras", write_tiny_wan_lora, comfy_models["lora"])
    t1 = time.monotonic()
    try:
        srv.start()
    except Exception:
        srv.stop()
        raise
    print(f"\n[host] models written in {t1 - t0:.1f} s, ComfyUI up in {srv.startup_seconds:.1f} s "
          f"on {srv.url} (base {base}, log {srv.log_path})")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def wan_pack(comfy: ComfyServer) -> ComfyServer:
    """The session's host, after checking that it imported our pack without error."""
    err = comfy.pack_import_error()
    if err is not None:
        pytest.fail(f"ComfyUI could not import the wan-accel pack:\n{err}", pytrace=False)
    return comfy
