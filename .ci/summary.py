"""CI helpers: the newest of several ComfyUI trees, and each tier's JUnit file checked against .ci/expected_tests.json.

    summary.py newest HOST_DIR...                      prints the tree with the highest comfyui_version.py version
    summary.py check LABEL JUNIT RC SECONDS [--host DIR]
        prints "LABEL: N passed, N failed, N skipped (S s, pytest exit RC)", then one line per violation of the
        tier's expectations (missing JUnit file, a skip not on the expected list, fewer tests ran than the floor);
        exits 1 when there is one. The tier is LABEL's first word; --host adds the "host <version>" entry.
    summary.py counts JUNIT...                         prints each file's numbers and skips as an entry to paste
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

EXPECTED = Path(__file__).resolve().parent / "expected_tests.json"


@dataclass
class Case:
    """One JUnit test case: its id (``classname::name``), outcome and, when skipped, pytest's reason and its
    ``path:line: reason`` line (what ``pytest -rs`` prints)."""

    test_id: str
    outcome: str
    message: str = ""
    detail: str = ""


@dataclass
class Expectation:
    """A tier's expectations: the fewest tests that must run and the skips it allows, pattern -> reason."""

    min_ran: int
    skips: dict[str, str] = field(default_factory=dict)


class CheckError(Exception):
    """A tier that cannot be checked: its JUnit file or the expectations file is missing or unreadable."""


def host_version(tree: str) -> tuple[int, ...]:
    """The ``__version__`` of a ComfyUI tree as a tuple of ints, (0,) if it has none."""
    text = (Path(tree) / "comfyui_version.py").read_text() if (Path(tree) / "comfyui_version.py").is_file() else ""
    match = re.search(r'__version__\s*=\s*"([\d.]+)"', text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else (0,)


def read_cases(junit: str) -> list[Case]:
    """The test cases of a pytest JUnit XML file; a case with a failure or error counts as failed, never skipped.
    Raises ``CheckError`` when the file is missing or not XML (pytest did not finish writing it)."""
    try:
        root = ElementTree.parse(junit).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise CheckError(f"missing or unreadable JUnit file {junit}: pytest did not finish (see its output above); "
                         f"{error}") from error
    cases = []
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            cases.append(Case(test_id, "failed"))
        elif skipped is not None:
            message = skipped.get("message", "")
            cases.append(Case(test_id, "skipped", message, (skipped.text or message).strip()))
        else:
            cases.append(Case(test_id, "passed"))
    return cases


def counts(cases: list[Case]) -> dict[str, int]:
    """passed, failed and skipped counts of a list of cases."""
    return {outcome: sum(1 for case in cases if case.outcome == outcome) for outcome in ("passed", "failed", "skipped")}


def tier_keys(label: str, host: str | None) -> list[str]:
    """The entries of the expectations file that apply to a tier: LABEL's first word, then "host <version>"."""
    keys = [label.split()[0]]
    if host:
        keys.append(f"{keys[0]} {'.'.join(str(part) for part in host_version(host))}")
    return keys


def load_expectation(path: Path, keys: list[str]) -> Expectation:
    """Merges the entries named by ``keys``: skips add up, the last entry with ``min_ran`` sets the floor.
    Raises ``CheckError`` naming the file when it is unreadable or lacks the first (the tier's own) entry."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckError(f"cannot read the expectations file {path}: {error}") from error
    if not isinstance(data, dict) or keys[0] not in data:
        raise CheckError(f"{path} has no entry {keys[0]!r}: add one (`python3 .ci/summary.py counts JUNIT` prints "
                         "the numbers and skips to start from)")
    expectation = Expectation(min_ran=0)
    for key in keys:
        entry = data.get(key)
        if entry is None:
            continue
        expectation.skips.update(entry.get("skips", {}))
        expectation.min_ran = entry.get("min_ran", expectation.min_ran)
    return expectation


def matches(test_id: str, pattern: str) -> bool:
    """Whether a test id matches a pattern: the exact id, where ``*`` stands for any text (``mod::test_x[*]``
    takes every parameter of ``test_x``); brackets are literal, unlike fnmatch's."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), test_id) is not None


def matching(test_id: str, patterns: dict[str, str]) -> str | None:
    """The first of ``patterns`` that matches ``test_id``, else None."""
    return next((pattern for pattern in patterns if matches(test_id, pattern)), None)


def violations(cases: list[Case], expectation: Expectation, where: str) -> tuple[list[str], list[str]]:
    """(violations that fail the tier, notes that do not) of a tier's cases against its expectation."""
    problems, notes = [], []
    for case in cases:
        if case.outcome == "skipped" and matching(case.test_id, expectation.skips) is None:
            problems.append(f"  unexpected skip: {case.test_id} ({case.detail or 'no skip message'})")
    ran = sum(1 for case in cases if case.outcome != "skipped")
    if ran < expectation.min_ran:
        problems.append(f"  too few tests ran: {ran} passed or failed, the floor in {where} is {expectation.min_ran}")
    skipped_ids = [case.test_id for case in cases if case.outcome == "skipped"]
    for pattern, reason in expectation.skips.items():
        if not any(matches(test_id, pattern) for test_id in skipped_ids):
            notes.append(f"  note: expected skip did not happen (it ran or no longer exists): {pattern} ({reason})")
    return problems, notes


def check(args: argparse.Namespace) -> int:
    """The ``check`` command: the summary line, then violations and notes; 1 when the tier breaks its expectations."""
    path = Path(args.expected)
    where = f"{path.name} [{' + '.join(tier_keys(args.label, args.host))}]"
    try:
        cases = read_cases(args.junit)
    except CheckError as error:
        print(f"{args.label}: 0 passed, 0 failed, 0 skipped ({args.seconds} s, pytest exit {args.rc})")
        print(f"  {error}")
        return 1
    c = counts(cases)
    print(f"{args.label}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
          f"({args.seconds} s, pytest exit {args.rc})")
    try:
        expectation = load_expectation(path, tier_keys(args.label, args.host))
    except CheckError as error:
        print(f"  {error}")
        return 1
    problems, notes = violations(cases, expectation, where)
    for line in problems + notes:
        print(line)
    if problems:
        print(f"  fix the tests, or update {where} with the reason (`python3 .ci/summary.py counts {args.junit}`)")
    return 1 if problems else 0


def counts_entry(args: argparse.Namespace) -> int:
    """The ``counts`` command: each JUnit file's numbers and skipped ids, as an expectations entry to edit."""
    for junit in args.junits:
        cases = read_cases(junit)
        c = counts(cases)
        print(f"# {junit}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped; "
              f"{c['passed'] + c['failed']} ran")
        entry = {"min_ran": c["passed"] + c["failed"],
                 "skips": {case.test_id: case.message for case in cases if case.outcome == "skipped"}}
        print(json.dumps(entry, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line described in the module docstring."""
    top = argparse.ArgumentParser(prog="summary.py", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    newest = commands.add_parser("newest")
    newest.add_argument("hosts", nargs="+")
    checking = commands.add_parser("check")
    for name in ("label", "junit", "rc", "seconds"):
        checking.add_argument(name)
    checking.add_argument("--host", default=None, help="the ComfyUI tree of a host tier")
    checking.add_argument("--expected", default=str(EXPECTED), help="the expectations file")
    counting = commands.add_parser("counts")
    counting.add_argument("junits", nargs="+")
    return top


def main(argv: list[str]) -> int:
    """Runs one command; its exit status."""
    args = parser().parse_args(argv)
    if args.command == "newest":
        print(max(args.hosts, key=host_version))
        return 0
    try:
        return check(args) if args.command == "check" else counts_entry(args)
    except CheckError as error:
        print(f"summary.py: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
