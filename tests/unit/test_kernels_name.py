"""Our numerics never shadow Hugging Face's ``kernels`` package, which transformers imports.

Every process that runs from a checkout has the checkout root on ``sys.path`` (pytest's conftest, ``python -c``
and ``python -m`` from the root, the benchmarks). A folder of ours named ``kernels`` there once broke
``import transformers.UMT5EncoderModel`` with "cannot import name 'CUDAProperties' from 'kernels'".
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_KERNELS_FIX = "install the test requirements: pip install -r requirements-test.txt (they list kernels)"


def _installed(path: Path) -> bool:
    """True for a file of an installed distribution (a venv inside the checkout counts as installed)."""
    return "site-packages" in path.parts or "dist-packages" in path.parts


def test_the_checkout_root_holds_no_module_named_kernels():
    assert not (REPO_ROOT / "kernels").exists() and not (REPO_ROOT / "kernels.py").exists()
    assert (REPO_ROOT / "wan_accel_kernels" / "__init__.py").is_file()


def test_hugging_face_kernels_and_ours_import_in_this_test_process():
    import transformers.integrations.hub_kernels as hub_kernels
    import wan_accel_kernels.gguf

    import kernels

    hf_file = Path(kernels.__file__).resolve()
    assert _installed(hf_file), f"kernels came from {hf_file}; {HUB_KERNELS_FIX}"
    assert hasattr(kernels, "CUDAProperties"), f"{hf_file} is not Hugging Face's kernels; {HUB_KERNELS_FIX}"
    assert hub_kernels.__name__ == "transformers.integrations.hub_kernels"
    assert Path(wan_accel_kernels.gguf.__file__).resolve().parent == REPO_ROOT / "wan_accel_kernels" / "gguf"


def test_a_process_started_in_the_checkout_root_gets_both_packages():
    """``python -c`` puts the working directory first on ``sys.path``: the trap the old folder name fell into."""
    script = ("import transformers, transformers.integrations.hub_kernels, kernels, wan_accel_kernels.gguf; "
              "transformers.UMT5EncoderModel; print(kernels.__file__); print(wan_accel_kernels.gguf.__file__)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    hf_file, ours = (Path(line).resolve() for line in done.stdout.split())
    assert _installed(hf_file), f"kernels came from {hf_file}"
    assert ours.parent == REPO_ROOT / "wan_accel_kernels" / "gguf"


def test_the_converter_runs_as_a_module_from_the_checkout_root():
    done = subprocess.run([sys.executable, "-m", "wan_accel.convert", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-2000:]
