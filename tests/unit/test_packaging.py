"""``pip install .`` installs exactly ``wan_accel`` and ``wan_accel_kernels`` (never the generic top-level name
``kernels``, which another distribution owns), and the installed CLI and converter run from another directory.

The wheel is built from a copy of the sources (so no build folder lands in the checkout) with this venv's
setuptools, then installed into a fresh venv; ``--no-deps`` keeps it offline and fast, and the dependencies come
from this venv's site-packages on ``PYTHONPATH`` (where ``kernels`` may be Hugging Face's, never ours).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "wan_accel", "wan_accel_kernels")
EXPECTED_TOP_LEVEL = {"wan_accel", "wan_accel_kernels"}


def _run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(fresh venv's python, its site-packages) with the pack's wheel installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy2
        copy(REPO_ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                 if (REPO_ROOT / name).is_dir() else {}))
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                 str(source), cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    try:
        venv.EnvBuilder(with_pip=False).create(tmp / "venv")
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot create a venv here: {error}")
    python = tmp / "venv" / "bin" / "python"
    wheel = next((tmp / "dist").glob("wan_accel-*.whl"))
    done = _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                str(wheel), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=tmp).stdout.strip())
    return python, site


def test_the_install_claims_only_our_top_level_names(installed):
    _, site = installed
    dist_info = next(site.glob("wan_accel-*.dist-info"))
    top_level = set((dist_info / "top_level.txt").read_text().split())
    recorded = {line.split(",")[0].split("/")[0] for line in (dist_info / "RECORD").read_text().splitlines()}
    recorded = {name for name in recorded if not name.endswith(".dist-info") and name != ".."}
    print(f"\ntop_level.txt {sorted(top_level)}; RECORD top-level entries {sorted(recorded)}")
    assert top_level == EXPECTED_TOP_LEVEL and recorded == EXPECTED_TOP_LEVEL
    assert not (site / "kernels").exists()
    shipped = {p.parent.name for p in (site / "wan_accel_kernels").glob("*/__init__.py")}
    assert shipped == {p.parent.name for p in (REPO_ROOT / "wan_accel_kernels").glob("*/__init__.py")}


def test_the_installed_cli_and_converter_run_from_another_directory(installed, tmp_path):
    python, site = installed
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    kernels_origin = _run(str(python), "-c", "import importlib.util as u; s = u.find_spec('kernels'); "
                          "print(s.origin if s else '')", cwd=tmp_path, env=env)
    cli = _run(str(python.parent / "wan-accel"), "--help", cwd=tmp_path, env=env)
    convert = _run(str(python), "-m", "wan_accel.convert", "--help", cwd=tmp_path, env=env)
    source = _run(str(python), "-c", "import wan_accel.convert as c; print(c.quantize.__module__)",
                  cwd=tmp_path, env=env)
    assert kernels_origin.returncode == 0, kernels_origin.stderr
    assert site not in Path(kernels_origin.stdout.strip() or "/").parents  # Hugging Face's, from PYTHONPATH, or none
    assert cli.returncode == 0 and "usage" in cli.stdout.lower(), cli.stderr
    assert convert.returncode == 0 and "usage" in convert.stdout.lower(), convert.stderr
    assert source.stdout.strip().startswith("wan_accel_kernels.gguf"), source.stderr
