"""The GPU suite's budgeted runner and its outputs: sections in priority order, each run only when its estimated
cost fits the remaining budget (else named as skipped, with the estimate), results written after every section to
one JSON file and one markdown file, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

JSON_NAME, MARKDOWN_NAME = "gpu_suite.json", "gpu_suite.md"
OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class SectionResult:
    """What one section reports: ``rows`` (dicts with the same keys), free-text ``notes``, and its status."""

    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = OK
    reason: str = ""


@dataclass(frozen=True)
class Section:
    """A named section: ``estimate(ctx)`` seconds before it runs, ``run(ctx)`` returns its result."""

    name: str
    title: str
    estimate: Callable[[Any], float]
    run: Callable[[Any], SectionResult]


class Budget:
    """Wall-clock budget of the whole suite, started at construction."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def check(self, estimate: float) -> Optional[str]:
        """Why ``estimate`` seconds do not fit what is left, or None when they do."""
        left = self.remaining()
        return None if estimate <= left else f"needs ~{estimate:.0f} s, {max(left, 0):.0f} s of the budget left"


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None (JSON has no NaN), tuples lists, other objects their str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def markdown(report: dict) -> str:
    """The report as markdown: the status of every section, then one table per section that has rows."""
    lines = [f"# wan-accel GPU suite: {report['device']['name']}" + (" (dry run: not speed figures)"
                                                                    if report["dry_run"] else ""), "",
             f"torch {report['device']['torch']}, triton {report['device']['triton']}; budget "
             f"{report['budget_s']:.0f} s, used {report['elapsed_s']:.0f} s", "",
             "| section | status | seconds | estimate s | reason |", "|---|---|---|---|---|"]
    for section in report["sections"]:
        lines.append(f"| {section['name']} | {section['status']} | {_cell(section['seconds'])} | "
                     f"{_cell(section['estimate_s'])} | {_cell(section['reason'] or '')} |")
    for section in report["sections"]:
        if not section["rows"] and not section["notes"]:
            continue
        lines += ["", f"## {section['title']}", ""]
        if section["rows"]:
            columns = list(dict.fromkeys(key for row in section["rows"] for key in row))
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in section["rows"]]
        lines += [f"- {note}" for note in section["notes"]]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict, out: Path) -> None:
    """Writes ``gpu_suite.json`` and ``gpu_suite.md`` to ``out`` (replacing the previous versions)."""
    out.mkdir(parents=True, exist_ok=True)
    data = clean(report)
    (out / JSON_NAME).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (out / MARKDOWN_NAME).write_text(markdown(data), encoding="utf-8")


def run_sections(sections: list[Section], ctx: Any, budget: Budget, report: dict, out: Path) -> dict:
    """Runs ``sections`` in order within ``budget``, appending each outcome to ``report['sections']`` and
    rewriting the outputs after each one."""
    for section in sections:
        estimate = float(section.estimate(ctx))
        entry = {"name": section.name, "title": section.title, "estimate_s": estimate, "seconds": None,
                 "status": OK, "reason": "", "rows": [], "notes": []}
        report["sections"].append(entry)
        reason = budget.check(estimate)
        print(f"\n== {section.title} (estimate {estimate:.0f} s, {budget.remaining():.0f} s left) ==", flush=True)
        if reason is not None:
            entry.update(status=SKIPPED, reason=reason)
            print(f"skipped: {reason}", flush=True)
        else:
            started = time.perf_counter()
            try:
                result = section.run(ctx)
                entry.update(rows=result.rows, notes=result.notes, status=result.status, reason=result.reason)
            except Exception as error:  # one broken section must not cost the others their numbers
                traceback.print_exc()
                entry.update(status=FAILED, reason=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                             if str(error) else type(error).__name__)
            entry["seconds"] = None if entry["status"] == SKIPPED else time.perf_counter() - started
            print(f"{entry['status']}{': ' + entry['reason'] if entry['reason'] else ''} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
        report["elapsed_s"] = budget.elapsed()
        write_outputs(report, out)
    return report
