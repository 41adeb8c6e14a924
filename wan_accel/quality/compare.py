"""A/B comparison of two scored batches made from the same pairs and seeds: per-metric mean difference with a
paired bootstrap 95 % interval, the final-score difference, and the samples that moved most."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..batch.samples import speed_score
from ..errors import UsageError
from .formulas import FINAL_INDICES, final_score
from .scores_file import read_scores
from .scoring import DEFAULT_METRICS


@dataclass(frozen=True)
class Difference:
    """B − A for one quantity: the mean over the paired samples and its bootstrap 95 % interval."""

    name: str
    a: float
    b: float
    delta: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """What ``wan-accel compare`` reports."""

    samples: list[str]
    differences: list[Difference]
    final: Difference | None
    moved: list[tuple[str, float]]
    only_a: list[str]
    only_b: list[str]


def scored_batch(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """A result folder's score records (``scores.json``) and, when there is one, its bench samples by id
    (``results.json``: seeds and prompts, to check that two batches are comparable)."""
    scores = folder / "scores.json" if folder.is_dir() else folder
    if not scores.is_file():
        raise UsageError(f"{folder} has no scores.json; make it with `wan-accel bench ... --score` or "
                         f"`wan-accel score --videos {folder / 'results.json'}`")
    records = read_scores(scores)["samples"]
    results = scores.parent / "results.json"
    samples = {}
    if results.is_file():
        try:
            samples = {s["id"]: s for s in json.loads(results.read_text(encoding="utf-8"))["samples"]}
        except (OSError, ValueError, KeyError, TypeError):
            samples = {}
    return records, samples


def check_pairing(ids: Sequence[str], samples_a: Mapping[str, Any], samples_b: Mapping[str, Any]) -> None:
    """Refuses batches whose shared samples were made from another prompt or seed: they are not paired."""
    for key in ("seed", "prompt"):
        differ = [i for i in ids if i in samples_a and i in samples_b
                  and samples_a[i].get(key) != samples_b[i].get(key)]
        if differ:
            raise UsageError(f"the two batches differ in {key} for sample(s) {', '.join(differ[:5])}: compare "
                             f"batches made from the same pairs and seeds")


def _final(indices: np.ndarray, seconds: np.ndarray | None) -> float | None:
    if seconds is None:
        return None
    return final_score(dict(zip(FINAL_INDICES, indices)), speed_score(float(np.mean(seconds))))


def compare(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]], resamples: int = 10000,
            seed: int = 0, top: int = 5) -> Comparison:
    """Paired comparison over the samples both batches scored; ``resamples`` bootstrap draws with a fixed seed."""
    ids = [i for i in a if i in b]
    if not ids:
        raise UsageError("the two batches share no scored sample id; compare batches made from the same pairs")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(resamples, len(ids)))
    names = [n for n in DEFAULT_METRICS if all(n in a[i]["indices"] and n in b[i]["indices"] for i in ids)]
    differences = []
    for name in names:
        va = np.array([a[i]["indices"][name] for i in ids])
        vb = np.array([b[i]["indices"][name] for i in ids])
        boot = (vb - va)[draws].mean(axis=1)
        differences.append(Difference(name, float(va.mean()), float(vb.mean()), float((vb - va).mean()),
                                      float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))))
    final = None
    if all(n in names for n in FINAL_INDICES):
        qa = np.array([[a[i]["indices"][n] for n in FINAL_INDICES] for i in ids])
        qb = np.array([[b[i]["indices"][n] for n in FINAL_INDICES] for i in ids])
        sa, sb = _seconds(a, ids), _seconds(b, ids)
        fa, fb = _final(qa.mean(axis=0), sa), _final(qb.mean(axis=0), sb)
        if fa is not None and fb is not None:
            boot = np.array([_final(qb[d].mean(axis=0), sb[d]) - _final(qa[d].mean(axis=0), sa[d]) for d in draws])
            final = Difference("final", fa, fb, fb - fa, float(np.percentile(boot, 2.5)),
                               float(np.percentile(boot, 97.5)))
    quality = [n for n in FINAL_INDICES if n in names]
    moved = sorted(((i, 0.2 * sum(b[i]["indices"][n] - a[i]["indices"][n] for n in quality)) for i in ids),
                   key=lambda item: -abs(item[1]))[:top]
    return Comparison(ids, differences, final, moved, sorted(set(a) - set(b)), sorted(set(b) - set(a)))


def _seconds(records: Mapping[str, Mapping[str, Any]], ids: Sequence[str]) -> np.ndarray | None:
    times = [records[i].get("seconds") for i in ids]
    return None if any(t is None for t in times) else np.array(times, dtype=np.float64)


def comparison_lines(result: Comparison, name_a: str, name_b: str) -> list[str]:
    """The comparison as the terminal prints it."""
    lines = [f"A = {name_a}, B = {name_b}: {len(result.samples)} paired sample(s)"]
    if result.only_a or result.only_b:
        lines.append(f"left out (scored on one side only): A {', '.join(result.only_a) or '-'}; "
                     f"B {', '.join(result.only_b) or '-'}")
    lines.append(f"{'metric':<11} {'A':>8} {'B':>8} {'B - A':>9}  95 % CI (paired bootstrap)")
    for d in result.differences + ([result.final] if result.final else []):
        lines.append(f"{d.name:<11} {d.a:>8.4f} {d.b:>8.4f} {d.delta:>+9.4f}  [{d.low:+.4f}, {d.high:+.4f}]")
    if result.final is None:
        lines.append("final      n/a (needs the four indices and every sample's generation time on both sides)")
    lines.append("moved most (0.2 x change of the four indices): " +
                 ", ".join(f"{i} {delta:+.4f}" for i, delta in result.moved))
    return lines
