"""Where each metric's network weights come from, and the one message a missing file gives.

Every metric loads through its library's own code, from ``--weights DIR`` when given, else from the library's usual
cache. Nothing downloads on its own: a missing file is a :class:`MissingWeights` error that says which metric, which
file, its size, where it comes from and the folder to put it in (``wan-accel score --list-weights`` prints them all).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import WanAccelError


@dataclass(frozen=True)
class WeightSpec:
    """One weight file of one metric: ``cache_dir`` is the library's usual folder for it (``~`` expanded at use)."""

    metric: str
    file: str
    size_mb: float
    source: str
    licence: str
    cache_dir: str

    def folder(self, weights_dir: Path | None) -> Path:
        """The folder this file is looked for in: ``weights_dir`` when given, else the library's cache."""
        return Path(weights_dir) if weights_dir is not None else Path(self.cache_dir).expanduser()

    def path(self, weights_dir: Path | None) -> Path:
        """Where this file is expected."""
        return self.folder(weights_dir) / self.file


class MissingWeights(WanAccelError):
    """A metric's weight file is not where it is looked for."""

    exit_code = 4

    def __init__(self, spec: WeightSpec, weights_dir: Path | None):
        super().__init__(
            f"metric {spec.metric} needs {spec.file} ({spec.size_mb:g} MB, licence: {spec.licence}); download it "
            f"from {spec.source} into {spec.folder(weights_dir)}"
            + ("" if weights_dir is not None else " (or pass --weights DIR with the file in it)"))


def locate(spec: WeightSpec, weights_dir: Path | None) -> Path:
    """The path of ``spec``'s file, or :class:`MissingWeights` before anything is loaded."""
    path = spec.path(weights_dir)
    if not path.is_file():
        raise MissingWeights(spec, weights_dir)
    return path


def weights_table(specs: Sequence[WeightSpec], weights_dir: Path | None) -> list[str]:
    """``--list-weights``: one line per file with its metric, size, licence, source and whether it is present."""
    lines = []
    for spec in specs:
        path = spec.path(weights_dir)
        state = "present" if path.is_file() else "MISSING"
        lines.append(f"{spec.metric:<11} {spec.file:<40} {spec.size_mb:>7g} MB  {state:<7}  {path}\n"
                     f"{'':<11} licence: {spec.licence}; from {spec.source}")
    return lines
