"""Imports the ComfyUI host in-process for the benchmarks, without the pack's node registration.

The DiT and VAE benchmarks need only the host's model code (``comfy.ldm.wan``, ``comfy.ops``, model management)
and our GGUF operations. The pack's ``__init__`` would also import the host's front-end API (``comfy_api``, which
pulls in PyAV, aiohttp and more): so the pack is registered as a package without running it, and only the modules
used are imported. That keeps the set of wheels a bare GPU image needs small (see benchmarks/README.md).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "wan_accel_pack"  # the name tests/support/host_inprocess.py gives the pack too


def _pack_module(name: str) -> ModuleType:
    """``wan_accel_pack.<name>``, the package registered without executing the pack's ``__init__.py``."""
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_loader(PACK_NAME, loader=None, is_package=True)
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(REPO_ROOT)]
        sys.modules[PACK_NAME] = package
    return importlib.import_module(f"{PACK_NAME}.{name}")


def load_host(comfyui: Optional[str]) -> tuple[Optional[dict], str]:
    """(the host and pack modules the benchmarks use, "") or (None, why the host is unavailable)."""
    if not comfyui:
        return None, "COMFYUI_PATH is not set (point it at a ComfyUI 0.3.64 checkout, or pass --comfyui)"
    if not (Path(comfyui) / "comfy" / "ldm" / "wan" / "model.py").is_file():
        return None, f"{comfyui} is not a ComfyUI checkout (no comfy/ldm/wan/model.py)"
    os.environ["COMFYUI_PATH"] = comfyui
    try:
        from tests.support.host_inprocess import import_host

        import_host()
        import comfy.ldm.modules.attention as attention
        import comfy.ldm.wan.model as wan
        import comfy.ldm.wan.vae as vae
        import comfy.ops as ops

        return {"wan": wan, "vae": vae, "ops": ops, "attention": attention, "import": _pack_module,
                "gguf": _pack_module("wan_accel_kernels.gguf"), "backend": _pack_module("wan_accel_kernels.gguf.backend"),
                "path_record": _pack_module("wan_accel_kernels.gguf.path_record"),
                "reader": _pack_module("wan_accel_kernels.gguf.reader"), "gguf_ops": _pack_module("nodes.gguf_ops")}, ""
    except ImportError as error:
        return None, (f"the host at {comfyui} does not import ({type(error).__name__}: {error}); install the "
                      "wheels listed in benchmarks/README.md")
