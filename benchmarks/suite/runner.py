"""The GPU suite's budgeted runner and its outputs: sections in priority order, each run only when its estimated
cost fits the remaining budget (else named as skipped, with the estimate), each stopped at an optional wall-clock
limit (the dry run's bound: reported as "skipped: over budget"), results written after every section to one JSON
file and one markdown file, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

JSON_NAME, MARKDOWN_NAME = "gpu_suite.json", "gpu_suite.md"
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
OVER_BUDGET = "over budget"


class OverBudget(BaseException):
    """Raised into a section that ran past its limit; a BaseException, so the sections' own ``except Exception``
    (which keep one failing row from costing the others) cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: Optional[float], why: str = "") -> Iterator[None]:
    """Raises :class:`OverBudget` (saying ``why``) in the main thread once ``seconds`` of wall time have passed
    (None: no limit).
    A SIGALRM timer: it interrupts Python code and sleeps, and a child process waited on (pytest) is killed by
    ``subprocess.run``; one long native call returns first, which the dry run's tiny shapes keep short."""
    if seconds is None:
        yield
        return

    def expire(signum, frame):
        raise OverBudget(why or f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
             f"{report['budget_s']:.0f} s, used {report['elapsed_s']:.0f} s; per-section limit "
             f"{_cell(report['section_limit_s'])} s; CPU threads {report['cpu_threads']}; dtypes: "
             f"{report['dtypes']}", "",
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


def _limit(limit_s: Optional[float], budget: Budget) -> tuple[Optional[float], str]:
    """(seconds, why) of the next section's limit: ``limit_s`` or what is left of the budget, whichever is less."""
    left = max(budget.remaining(), 0.01)
    if limit_s is None or limit_s <= left:
        return limit_s, f"ran past the {limit_s:g} s per-section limit" if limit_s is not None else ""
    return left, f"ran past the {left:.1f} s left of the budget"


def run_sections(sections: list[Section], ctx: Any, budget: Budget, report: dict, out: Path,
                 limit_s: Optional[float] = None) -> dict:
    """Runs ``sections`` in order within ``budget``, each stopped after ``limit_s`` seconds or what is left of the
    budget, whichever is less (None: no limit; a stopped section is skipped "over budget"), appending each outcome
    to ``report['sections']`` and rewriting the outputs after each one."""
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
                with time_limit(*_limit(limit_s, budget)):
                    result = section.run(ctx)
                entry.update(rows=result.rows, notes=result.notes, status=result.status, reason=result.reason)
            except OverBudget as stopped:
                entry.update(status=SKIPPED, reason=f"{OVER_BUDGET}: {stopped}")
            except Exception as error:  # one broken section must not cost the others their numbers
                traceback.print_exc()
                entry.update(status=FAILED, reason=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                             if str(error) else type(error).__name__)
            entry["seconds"] = time.perf_counter() - started
            print(f"{entry['status']}{': ' + entry['reason'] if entry['reason'] else ''} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
        report["elapsed_s"] = budget.elapsed()
        write_outputs(report, out)
    return report
