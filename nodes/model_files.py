"""Lists and resolves model files of one extension in the host's model folders (``folder_paths``)."""
from __future__ import annotations

import os

import folder_paths


def list_model_files(folder: str, extensions: set[str]) -> list[str]:
    """Relative names of the files under every path of ``folder`` with one of ``extensions``."""
    names: set[str] = set()
    for base in folder_paths.get_folder_paths(folder):
        if os.path.isdir(base):
            files, _ = folder_paths.recursive_search(base, excluded_dir_names=[".git"])
            names.update(folder_paths.filter_files_extensions(files, extensions))
    return sorted(names)


def resolve_model_file(folder: str, name: str) -> str:
    """Full path of ``name`` in ``folder``; the error names the folders searched."""
    for base in folder_paths.get_folder_paths(folder):
        candidate = os.path.join(base, name)
        if os.path.isfile(candidate):
            return candidate
    searched = ", ".join(folder_paths.get_folder_paths(folder))
    raise FileNotFoundError(f"{name} not found in models/{folder} (searched: {searched}); put the file there")
