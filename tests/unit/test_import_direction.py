"""What may import what, read from the source with ``ast``: ``wan_accel_kernels`` <- ``nodes``, ``wan_accel``,
``benchmarks``; nothing at run time (the pack's root, ``nodes``, ``wan_accel``, ``wan_accel_kernels``) imports
``benchmarks`` or ``tests``; the kernels never import the host. ``benchmarks`` and ``tests`` may import them all
(the benchmarks drive the host through ``tests/support``).

Every ``import`` and ``from ... import`` is resolved to the top-level package it names, relative imports included
(``from ...nodes import x`` inside ``benchmarks/lib/`` is ``nodes``), so a violation is found whichever spelling
it uses.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "wan_accel_kernels": {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "server",
                          "nodes", "wan_accel", "benchmarks", "tests"},
    "nodes": {"benchmarks", "tests"},
    "wan_accel": {"benchmarks", "tests"},
    "__init__.py": {"benchmarks", "tests"},
}
"""Top-level names each tree must not import. ``nodes`` here is the pack's folder and the host's module alike:
the kernels import neither."""


def imported_top_levels(path: Path, root: Path = REPO_ROOT) -> list[tuple[int, str]]:
    """``(line, top-level name)`` of every import in ``path``; relative imports resolved against its folder under
    ``root`` (the pack's root is the package the host imports, so ``from .nodes`` there is ``nodes``)."""
    package = list(path.relative_to(root).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module.split(".")[0]))
                continue
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            parts = base + (node.module.split(".") if node.module else [alias.name for alias in node.names[:1]])
            found.append((node.lineno, parts[0] if parts else "<the pack's root>"))
    return found


def violations(tree: str, root: Path = REPO_ROOT) -> list[str]:
    """``file:line imports name`` for every forbidden import under ``tree`` (a folder or file of ``root``)."""
    found = []
    top = root / tree
    for path in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
        for line, name in imported_top_levels(path, root):
            if name in FORBIDDEN[tree]:
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("tree", sorted(FORBIDDEN))
def test_each_tree_imports_only_what_it_may(tree):
    assert (REPO_ROOT / tree).exists()
    assert violations(tree) == [], (
        f"{tree}/ may not import {sorted(FORBIDDEN[tree])}: move shared code down into wan_accel_kernels/ (numerics) "
        f"or tests/support/ (test helpers)")


def test_relative_and_absolute_imports_resolve_to_their_top_level(tmp_path):
    source = tmp_path / "benchmarks" / "lib" / "probe.py"
    source.parent.mkdir(parents=True)
    source.write_text("import tests.support.x\nfrom ..suite import a\nfrom ... import nodes\nfrom .timing import t\n"
                      "from ...wan_accel_kernels.gguf import q\nimport comfy.model_management as mm\n")
    names = [name for _, name in imported_top_levels(source, root=tmp_path)]
    assert names == ["tests", "benchmarks", "nodes", "benchmarks", "wan_accel_kernels", "comfy"]


def test_a_kernel_importing_the_host_is_reported(tmp_path):
    kernel = tmp_path / "wan_accel_kernels" / "vae" / "bad.py"
    kernel.parent.mkdir(parents=True)
    kernel.write_text("import torch\nfrom comfy import model_management\nfrom ...nodes.stats import NodeStats\n")
    assert violations("wan_accel_kernels", root=tmp_path) == ["wan_accel_kernels/vae/bad.py:2 imports comfy",
                                               "wan_accel_kernels/vae/bad.py:3 imports nodes"]
