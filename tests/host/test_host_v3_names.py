"""Every name our nodes use from the host's V3 API (``comfy_api.latest.io`` / ``ui``, e.g. ``io.Schema``,
``io.Combo.Input``, ``ui.PreviewText``) exists in this host; ComfyUI 0.33 turned both modules into public shims."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

from tests.support.host_inprocess import import_host

NODES_DIR = Path(__file__).resolve().parents[2] / "nodes"


def used_v3_names() -> set[tuple[str, ...]]:
    """Dotted attribute chains rooted at ``io`` or ``ui`` in ``nodes/*.py``, as tuples like ("io", "Combo", "Input")."""
    chains = set()
    for path in NODES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id in ("io", "ui") and parts:
                chains.add((node.id, *reversed(parts)))
    return chains


def test_every_io_and_ui_name_our_nodes_use_exists_in_this_host():
    import_host()
    latest = importlib.import_module("comfy_api.latest")
    modules = {"io": latest.io, "ui": latest.ui}
    chains = used_v3_names()
    missing = []
    for chain in sorted(chains):
        target = modules[chain[0]]
        for part in chain[1:]:
            if not hasattr(target, part):
                missing.append(".".join(chain))
                break
            target = getattr(target, part)
    print(f"\n{len(chains)} io/ui names used by nodes/*.py")
    assert len(chains) > 20 and ("io", "Schema") in chains and ("ui", "PreviewText") in chains
    assert missing == []
