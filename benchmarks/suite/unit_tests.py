"""GPU-suite section 1: the device unit tests (Triton GGUF kernels bit-exact against the torch path, the fp8
text-encoder linears, the W8A8 kernels where they exist), run by pytest in a child process on this machine."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import FAILED, OK, Section, SectionResult

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_FILES = ("tests/unit/test_triton_dequantize.py", "tests/unit/test_triton_matmul.py",
              "tests/unit/test_fp8_linear.py")
W8A8_PATTERN = "test_w8a8*.py"
NO_TESTS_COLLECTED = 5  # pytest's exit status when it collected nothing


DRY_RUN_FILES = ("tests/unit/test_fp8_linear.py",)  # the dry run checks the harness; the unit tier runs the rest


def test_files(dry_run: bool) -> list[str]:
    """The device test files, the W8A8 ones included where they exist (the dry run: only the quick one)."""
    if dry_run:
        return list(DRY_RUN_FILES)
    w8a8 = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests" / "unit").glob(W8A8_PATTERN))
    return [*TEST_FILES, *w8a8]


def _counts(junit: Path) -> list[dict]:
    """One row per test file: passed, failed, errors, skipped, seconds."""
    per_file: dict[str, dict] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = case.get("classname", "").split(".")[-1] or case.get("file", "?")
        row = per_file.setdefault(name, {"file": name, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
                                         "seconds": 0.0})
        row["seconds"] += float(case.get("time", 0.0))
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), None)
        row[{"failure": "failed", "error": "errors", "skipped": "skipped", None: "passed"}[outcome]] += 1
    return list(per_file.values())


def verdict(returncode: int, rows: list[dict], summary: str) -> tuple[str, str]:
    """(status, reason) of the section: failed when a test failed, and failed when no test passed (all skipped, or
    none collected: pytest's exit 5), since a section that checked nothing must not read as green."""
    if returncode not in (0, NO_TESTS_COLLECTED):
        return FAILED, f"pytest exit {returncode}: {summary}"
    passed, skipped = sum(r["passed"] for r in rows), sum(r["skipped"] for r in rows)
    if passed == 0:
        collected = sum(r["passed"] + r["failed"] + r["errors"] + r["skipped"] for r in rows)
        return FAILED, f"no test passed ({collected} collected, {skipped} skipped): pytest: {summary}"
    return OK, ""


def run(ctx: SuiteContext) -> SectionResult:
    """Runs the test files with pytest (``-x`` off: every failure is counted) and reports the counts."""
    files = test_files(ctx.dry_run)
    env = dict(os.environ)
    if not ctx.cuda:  # the CPU dry run: Triton kernels in the interpreter, the suite's CPU threads
        env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "junit.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO_ROOT / "tests" / "pytest.ini"), "-q",
                               "-p", "no:cacheprovider", f"--junitxml={junit}", *files], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=max(ctx.budget.remaining(), 30))
        rows = _counts(junit) if junit.is_file() else []
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
    status, reason = verdict(done.returncode, rows, summary)
    return SectionResult(rows=rows, notes=[f"pytest {' '.join(files)}: {summary}"], status=status, reason=reason)


SECTION = Section("unit_tests", "CUDA unit tests (Triton GGUF bit-exact, fp8 linears, W8A8)",
                  lambda ctx: ctx.full_or_dry(90, 15), run)
