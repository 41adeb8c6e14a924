"""`.ci/summary.py check`: a tier fails on an unexpected skip, too few tests or a missing JUnit file, and passes
with only its expected skips; run as CI runs it, a separate process, so exit codes and printed lines are real."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUMMARY = Path(__file__).resolve().parents[2] / ".ci" / "summary.py"
CUDA_REASON = "needs CUDA: the fused kernel has no CPU path"


def _junit(path: Path, passed: int, skips: dict[str, str], failed: int = 0) -> Path:
    """A pytest-style JUnit file: ``passed`` passing cases, ``failed`` failing ones and the given skips."""
    cases = [f'<testcase classname="unit.test_fast" name="test_{i}" time="0.1"/>' for i in range(passed)]
    cases += [f'<testcase classname="unit.test_fast" name="test_bad_{i}" time="0.1"><failure message="boom"/>'
              f'</testcase>' for i in range(failed)]
    for test_id, message in skips.items():
        classname, name = test_id.split("::")
        cases.append(f'<testcase classname="{classname}" name="{name}" time="0"><skipped type="pytest.skip" '
                     f'message="{message}">{message}</skipped></testcase>')
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(cases)}'
                    f'</testsuite></testsuites>')
    return path


def _expected(path: Path, entries: dict) -> Path:
    path.write_text(json.dumps(entries))
    return path


def _check(tmp_path: Path, label: str, junit: Path, entries: dict, *extra: str) -> subprocess.CompletedProcess:
    expected = _expected(tmp_path / "expected.json", entries)
    return subprocess.run([sys.executable, str(SUMMARY), "check", label, str(junit), "0", "12",
                           "--expected", str(expected), *extra], capture_output=True, text=True, timeout=60)


UNIT = {"unit": {"min_ran": 5, "skips": {"unit.test_gpu::test_fused[*]": CUDA_REASON}}}


def test_the_expected_case_passes_and_prints_the_summary_line(tmp_path):
    junit = _junit(tmp_path / "unit.xml", 6, {"unit.test_gpu::test_fused[fp16]": "no CUDA",
                                              "unit.test_gpu::test_fused[bf16]": "no CUDA"})
    result = _check(tmp_path, "unit", junit, UNIT)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == ["unit: 6 passed, 0 failed, 2 skipped (12 s, pytest exit 0)"]


def test_an_unexpected_skip_fails_with_pytests_message(tmp_path):
    junit = _junit(tmp_path / "unit.xml", 6, {"unit.test_gpu::test_fused[fp16]": "no CUDA",
                                              "unit.test_io::test_read": "could not import 'gguf'",
                                              "unit.test_gpu::test_fusedx": "no CUDA"})
    result = _check(tmp_path, "unit", junit, UNIT)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "unit: 6 passed, 0 failed, 3 skipped (12 s, pytest exit 0)"
    assert lines[1:3] == ["  unexpected skip: unit.test_io::test_read (could not import 'gguf')",
                          "  unexpected skip: unit.test_gpu::test_fusedx (no CUDA)"]  # "[*]" is no fnmatch class
    assert not any("test_fused[fp16]" in line for line in lines)


def test_too_few_tests_fail_even_when_all_passed(tmp_path):
    junit = _junit(tmp_path / "unit.xml", 4, {})
    result = _check(tmp_path, "unit", junit, UNIT)
    assert result.returncode == 1
    assert "  too few tests ran: 4 passed or failed, the floor in expected.json [unit] is 5" in result.stdout
    assert "  note: expected skip did not happen (it ran or no longer exists): unit.test_gpu::test_fused[*] " \
           f"({CUDA_REASON})" in result.stdout


def test_failed_tests_count_as_run_and_skipped_ones_do_not(tmp_path):
    junit = _junit(tmp_path / "unit.xml", 3, {"unit.test_gpu::test_fused[fp16]": "no CUDA"}, failed=2)
    result = _check(tmp_path, "unit", junit, UNIT)
    assert result.stdout.splitlines()[0] == "unit: 3 passed, 2 failed, 1 skipped (12 s, pytest exit 0)"
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("content", [None, '<?xml version="1.0"?><testsuites><testsuite name="pytest"><testc'])
def test_a_missing_or_half_written_junit_file_fails(tmp_path, content):
    junit = tmp_path / "unit.xml"
    if content is not None:
        junit.write_text(content)
    result = _check(tmp_path, "unit", junit, UNIT)
    assert result.returncode == 1
    summary, problem = result.stdout.splitlines()
    assert summary == "unit: 0 passed, 0 failed, 0 skipped (12 s, pytest exit 0)"
    assert problem.startswith(f"  missing or unreadable JUnit file {junit}: pytest did not finish")


def test_a_tier_without_an_entry_fails_and_names_the_file(tmp_path):
    junit = _junit(tmp_path / "parity.xml", 6, {})
    result = _check(tmp_path, "device-parity torch 2.11", junit, UNIT)
    assert result.returncode == 1
    assert "has no entry 'device-parity': add one" in result.stdout


def _host(tmp_path: Path, version: str) -> Path:
    tree = tmp_path / f"ComfyUI-{version}"
    tree.mkdir()
    (tree / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    return tree


HOSTS = {"host": {"min_ran": 5, "skips": {"host.test_attention::test_inductor": "opt-in"}},
         "host 0.3.64": {"min_ran": 4, "skips": {"host.test_attention::test_containers": "ComfyUI < 0.33"}}}


def test_a_host_versions_entry_adds_skips_and_sets_the_floor(tmp_path):
    junit = _junit(tmp_path / "host.xml", 4, {"host.test_attention::test_inductor": "set WAN_ACCEL_INDUCTOR=1",
                                              "host.test_attention::test_containers": "no containers"})
    old = _check(tmp_path, "host ComfyUI-0.3.64", junit, HOSTS, "--host", str(_host(tmp_path, "0.3.64")))
    assert old.returncode == 0, old.stdout
    new = _check(tmp_path, "host ComfyUI-0.33.0", junit, HOSTS, "--host", str(_host(tmp_path, "0.33.0")))
    assert new.returncode == 1
    assert "  unexpected skip: host.test_attention::test_containers (no containers)" in new.stdout
    assert "  too few tests ran: 4 passed or failed, the floor in expected.json [host + host 0.33.0] is 5" \
        in new.stdout


def test_counts_prints_an_entry_that_passes_its_own_check(tmp_path):
    junit = _junit(tmp_path / "unit.xml", 7, {"unit.test_gpu::test_fused[fp16]": "no CUDA"})
    printed = subprocess.run([sys.executable, str(SUMMARY), "counts", str(junit)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    header, _, body = printed.partition("\n")
    assert header == f"# {junit}: 7 passed, 0 failed, 1 skipped; 7 ran"
    entry = json.loads(body)
    assert entry == {"min_ran": 7, "skips": {"unit.test_gpu::test_fused[fp16]": "no CUDA"}}
    assert _check(tmp_path, "unit", junit, {"unit": entry}).returncode == 0
