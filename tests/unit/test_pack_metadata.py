"""Pack metadata the Comfy Registry and ComfyUI-Manager rely on, and the layout rule that wan_accel_kernels/ never imports comfy."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _requirements() -> list[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_registry_name_version_and_publisher_rules():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9_-]+", project["name"]) and "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert 0 < len(project["description"]) <= 1000
    assert project["license"]
    assert project["urls"]["Repository"].startswith("https://")
    assert re.fullmatch(r"[a-z][a-z0-9-]*", comfy["PublisherId"])
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert (REPO_ROOT / comfy["Icon"]).is_file()
    assert "web" not in comfy, "WEB_DIRECTORY registers web/; a second registration serves it twice"


def test_manager_requirements_equal_project_dependencies():
    assert _requirements() == PYPROJECT["project"]["dependencies"]
    assert not any(re.match(r"torch(vision|audio)?\b", req) for req in _requirements())


def test_kernels_never_import_comfy():
    offenders = []
    for path in (REPO_ROOT / "wan_accel_kernels").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO_ROOT)}: {name}" for name in names
                          if name.split(".")[0] in {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes"}]
    assert offenders == []


def test_entry_point_registers_the_web_directory():
    source = (REPO_ROOT / "__init__.py").read_text()
    assert 'WEB_DIRECTORY = "./web"' in source and "comfy_entrypoint" in source
    assert (REPO_ROOT / "web").is_dir()
