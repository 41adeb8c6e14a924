"""Model-file inputs: list, check and resolve the names a graph sends, only through the host's ``folder_paths``.

A name is accepted only when it is one of the files the node's dropdown lists, so ``../../etc/passwd``, an absolute
path or any other name is refused before a byte is read. ComfyUI 0.3.64 does not check V3 dropdown values against
their options, hence the check here, at queue time (``validate_inputs``) and again before the file is opened.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import folder_paths
from comfy_api.latest import io

MAX_SHOWN = 120  # characters of a rejected name quoted in the error


def list_model_files(folder: str, extensions: set[str] | frozenset[str]) -> list[str]:
    """Relative names of the files under every path of ``folder`` with one of ``extensions``."""
    names: set[str] = set()
    for base in folder_paths.get_folder_paths(folder):
        if os.path.isdir(base):
            files, _ = folder_paths.recursive_search(base, excluded_dir_names=[".git"])
            names.update(folder_paths.filter_files_extensions(files, extensions))
    return sorted(names)


@dataclass(frozen=True)
class ModelFileInput:
    """One dropdown of model files: the input's name, its host folder and the extensions it lists."""

    input_name: str
    folder: str
    extensions: frozenset[str]

    def options(self) -> list[str]:
        """The names the dropdown offers (and the only ones accepted)."""
        return list_model_files(self.folder, self.extensions)

    def combo_input(self, tooltip: str) -> io.Combo.Input:
        """The node's dropdown input: named ``input_name``, offering :meth:`options`."""
        return io.Combo.Input(self.input_name, options=self.options(), tooltip=tooltip)

    def problem(self, name: object) -> str | None:
        """Why ``name`` is refused, or None when it is one of :meth:`options`."""
        if isinstance(name, str) and name in self.options():
            return None
        shown = repr(name if not isinstance(name, str) or len(name) <= MAX_SHOWN else name[:MAX_SHOWN] + "...")
        kinds = "/".join(sorted(self.extensions))
        return (f"{self.input_name} {shown} is not a file in models/{self.folder}; pick one from the list or put "
                f"the {kinds} file there")

    def validate(self, name: object) -> bool | str:
        """``validate_inputs`` answer for ``name``: True, or the error. A linked value (None at queue time) is
        checked when the node runs, by :meth:`resolve`."""
        return True if name is None else (self.problem(name) or True)

    def resolve(self, name: object) -> str:
        """Full path of ``name`` through the host's ``folder_paths``; ValueError, before any read, if not listed."""
        problem = self.problem(name)
        if problem is not None:
            raise ValueError(problem)
        return folder_paths.get_full_path_or_raise(self.folder, name)

