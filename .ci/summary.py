"""CI helpers: the newest of several ComfyUI trees, one summary line per pytest JUnit file, and whether tests ran.

    summary.py newest HOST_DIR...          prints the tree with the highest comfyui_version.py version
    summary.py line LABEL JUNIT RC SECONDS  prints "LABEL: N passed, N failed, N skipped (S s, pytest exit RC)"
    summary.py ran JUNIT                    exits 1 when the file records no test that ran (all skipped or none)
"""
from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def host_version(tree: str) -> tuple[int, ...]:
    """The ``__version__`` of a ComfyUI tree as a tuple of ints, (0,) if it has none."""
    text = (Path(tree) / "comfyui_version.py").read_text() if (Path(tree) / "comfyui_version.py").is_file() else ""
    match = re.search(r'__version__\s*=\s*"([\d.]+)"', text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else (0,)


def counts(junit: str) -> dict[str, int]:
    """passed, failed (failures and errors) and skipped test cases of a JUnit XML file; all 0 if it is missing."""
    if not Path(junit).is_file():
        return {"passed": 0, "failed": 0, "skipped": 0}
    cases = list(ElementTree.parse(junit).getroot().iter("testcase"))
    failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None and c.find("failure") is None)
    return {"passed": len(cases) - failed - skipped, "failed": failed, "skipped": skipped}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "newest":
        print(max(args, key=host_version))
        return 0
    if command == "line":
        label, junit, rc, seconds = args
        c = counts(junit)
        print(f"{label}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
              f"({seconds} s, pytest exit {rc})")
        return 0
    if command == "ran":
        c = counts(args[0])
        return 0 if c["passed"] + c["failed"] > 0 else 1
    raise SystemExit(f"summary.py: unknown command {command!r}; see the module docstring")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
