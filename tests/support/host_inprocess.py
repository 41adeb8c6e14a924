"""Imports the real ComfyUI host and our pack into the test process, for tests that drive host objects directly.

The pack is imported under the package name ``wan_accel_pack`` (the host imports it under its folder
name); the host's own modules come from ``COMFYUI_PATH``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "wan_accel_pack"


def import_host() -> None:
    """Puts ``COMFYUI_PATH`` first on ``sys.path`` and imports the host's model management, as ``--cpu``
    when this torch has no CUDA (what the server fixture passes too)."""
    comfyui_path = os.environ["COMFYUI_PATH"]
    if comfyui_path not in sys.path:
        sys.path.insert(0, comfyui_path)
    importlib.import_module("comfy.options").enable_args_parsing(False)
    importlib.import_module("comfy.cli_args").args.cpu = not torch.cuda.is_available()
    importlib.import_module("comfy.model_management")


def import_pack_module(name: str) -> ModuleType:
    """``wan_accel_pack.<name>`` (e.g. ``nodes.gguf_model``), importing the host and the pack first and registering
    the pack's folders and route as the host's call of ``comfy_entrypoint`` does."""
    import_host()
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(REPO_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
        importlib.import_module(f"{PACK_NAME}.nodes.extension").register_with_host()
    return importlib.import_module(f"{PACK_NAME}.{name}")


def loaded_entries(model: torch.nn.Module) -> int:
    """How many of the host's ``current_loaded_models`` entries hold ``model`` (what ``POST /free`` unloads)."""
    import comfy.model_management

    return sum(entry.model is not None and entry.model.model is model
               for entry in comfy.model_management.current_loaded_models)
