"""The host loads our pack the way it loads every custom node (``nodes.load_custom_node``), and that leaves
``sys.modules["kernels"]`` as it was: Hugging Face's ``kernels`` (which transformers imports) stays theirs, and
no module of ours is ever registered under the generic top-level name. Importing any module of the pack registers
nothing with the host: its folder and route are added when the host calls ``comfy_entrypoint``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

LOAD_AS_THE_HOST_DOES = r"""
import asyncio, json, sys
host, pack = sys.argv[1], sys.argv[2]
sys.path.insert(0, host)
import comfy.options
comfy.options.enable_args_parsing(False)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import nodes
import kernels
before = sys.modules.get("kernels")
before_names = {name for name in sys.modules if name == "kernels" or name.startswith("kernels.")}
loaded = asyncio.run(nodes.load_custom_node(pack))
after = sys.modules.get("kernels")
added = sorted({name for name in sys.modules if name == "kernels" or name.startswith("kernels.")} - before_names)
files = {name: str(getattr(module, "__file__", None) or "") for name, module in list(sys.modules.items())}
ours = sorted(name for name, file in files.items()  # a venv may live inside the checkout: site-packages is theirs
              if name.split(".")[0] == "kernels" and file.startswith(pack + "/") and "site-packages" not in file)
print(json.dumps({"loaded": loaded, "same": after is before, "before": getattr(before, "__file__", None),
                  "added": added, "ours_as_kernels": ours,
                  "registered": sorted(n for n in nodes.NODE_CLASS_MAPPINGS if n.startswith("WanAccel"))}))
"""


def _load_pack() -> dict:
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    done = subprocess.run([python, "-c", LOAD_AS_THE_HOST_DOES, os.environ["COMFYUI_PATH"], str(REPO_ROOT)],
                          cwd=REPO_ROOT.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loading_the_pack_keeps_hugging_face_kernels_in_sys_modules():
    result = _load_pack()
    assert result["loaded"] is True and "WanAccelLoadDiTGGUF" in result["registered"]
    assert "site-packages" in Path(result["before"]).parts, result["before"]
    assert result["same"] is True and result["added"] == [] and result["ours_as_kernels"] == []



IMPORT_EVERY_MODULE_THEN_ENTER = r"""
import asyncio, gc, importlib, importlib.util, json, pkgutil, sys, types
host, pack = sys.argv[1], sys.argv[2]
sys.path.insert(0, host)
import comfy.options
comfy.options.enable_args_parsing(False)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import folder_paths

class Routes:
    added = []
    def get(self, path):
        def register(handler):
            self.added.append(("GET", path))
            return handler
        return register

server = types.ModuleType("server")
server.PromptServer = type("PromptServer", (), {"instance": type("Instance", (), {"routes": Routes()})()})
sys.modules["server"] = server

def state():
    return {"folders": sorted(folder_paths.folder_names_and_paths), "routes": list(Routes.added),
            "gc_callbacks": len(gc.callbacks)}

before = state()
spec = importlib.util.spec_from_file_location("wan_accel_pack", pack + "/__init__.py", submodule_search_locations=[pack])
package = importlib.util.module_from_spec(spec)
sys.modules["wan_accel_pack"] = package
spec.loader.exec_module(package)
imported = []
for module in pkgutil.walk_packages([pack + "/nodes"], "wan_accel_pack.nodes."):
    importlib.import_module(module.name)
    imported.append(module.name)
after_import = state()
asyncio.run(package.comfy_entrypoint())
print(json.dumps({"before": before, "after_import": after_import, "after_entrypoint": state(),
                  "imported": imported}))
"""


def test_importing_every_node_module_registers_nothing_until_the_entry_point_runs():
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    done = subprocess.run([python, "-c", IMPORT_EVERY_MODULE_THEN_ENTER, os.environ["COMFYUI_PATH"], str(REPO_ROOT)],
                          cwd=REPO_ROOT.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {f"wan_accel_pack.nodes.{path.stem}" for path in (REPO_ROOT / "nodes").glob("*.py")
                if path.stem != "__init__"} | {"wan_accel_pack.nodes.stats.publish"}
    assert expected <= set(result["imported"])
    assert result["after_import"] == result["before"]
    entered = result["after_entrypoint"]
    assert entered["routes"] == [["GET", "/wan_accel/stats"]]
    assert sorted(set(entered["folders"]) - set(result["before"]["folders"])) == ["wan_accel_step_cache"]
    assert entered["gc_callbacks"] == result["before"]["gc_callbacks"]
