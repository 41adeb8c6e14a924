"""``wan-accel doctor``: what is live and what is missing, here and on the server, for each shipped workflow."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from pathlib import Path
from typing import Any, Callable, Mapping

from .client import ComfyClient, combo_options, input_spec
from .device_fit import cpu_only, cpu_warnings
from .errors import WanAccelError, mask_secrets
from .graph_fill import load_api_workflow
from .workflow_catalog import DOWNLOADS, FOLDER_ALIASES, WORKFLOWS, model_files

FP8_MATMUL_CAPABILITY = (8, 9)   # Ada (sm89) and Hopper: fp8 tensor cores, torch._scaled_mm
NOT_CHECKED_EXIT = 3             # the server did not answer: nodes (and files, without --comfyui) were not checked


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def runtime_lines() -> list[str]:
    """This machine: Python, torch and CUDA, the GPU and its capability, fp8, triton and sageattention."""
    lines = [f"python {platform.python_version()} on {platform.system()} {platform.machine()}"]
    if importlib.util.find_spec("torch") is None:
        return lines + ["torch: not installed here (the server's torch is reported below)"]
    import torch

    cuda = torch.cuda.is_available()
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA build"
    lines.append(f"torch {torch.__version__} ({build}); CUDA GPU available: {'yes' if cuda else 'no'}")
    capability = None
    if cuda:
        capability = torch.cuda.get_device_capability(0)
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU 0: {props.name}, sm{capability[0]}{capability[1]}, {props.total_memory / 2**30:.1f} GiB")
    has_fp8 = hasattr(torch, "float8_e4m3fn")
    fast_fp8 = capability is not None and capability >= FP8_MATMUL_CAPABILITY
    lines.append(f"fp8 e4m3fn storage: {'yes' if has_fp8 else 'no (torch too old)'}; fp8 matmul (needs "
                 f"sm{FP8_MATMUL_CAPABILITY[0]}{FP8_MATMUL_CAPABILITY[1]}+): {'yes' if fast_fp8 else 'no'}")
    for package, without in (("triton", "Triton kernels fall back to torch"),
                             ("sageattention", "Patch Attention falls back to PyTorch SDPA")):
        version = _package_version(package)
        if version is None:
            lines.append(f"{package}: not installed ({without})")
        else:
            lines.append(f"{package} {version}" + ("" if cuda else f" (no CUDA GPU here: {without})"))
    return lines


def local_cpu_only() -> bool | None:
    """True when this machine's torch sees no CUDA GPU, None without torch (used when the server is down)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return not torch.cuda.is_available()


def server_lines(stats: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """The server: versions, devices, and the wan-accel nodes it loaded."""
    system = stats.get("system", {})
    lines = [f"ComfyUI {system.get('comfyui_version', '?')}, torch {system.get('pytorch_version', '?')}, "
             f"python {str(system.get('python_version', '?')).split()[0]}"]
    for device in stats.get("devices", []):
        lines.append(f"device {device.get('name')}: {device.get('vram_total', 0) / 2**30:.1f} GiB total, "
                     f"{device.get('vram_free', 0) / 2**30:.1f} GiB free")
    ours = sorted(name for name in object_info if name.startswith("WanAccel"))
    lines.append(f"wan-accel nodes loaded: {len(ours)}" + (f" ({', '.join(ours)})" if ours else
                                                           " (pack not installed or failed to import: see its log)"))
    return lines


def _local_files(comfyui_dir: Path, folder: str) -> set[str]:
    names = set()
    for alias in FOLDER_ALIASES.get(folder, (folder,)):
        base = comfyui_dir / "models" / alias
        if base.is_dir():
            names.update(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    return names


def workflow_lines(object_info: Mapping[str, Any] | None, comfyui_dir: Path | None,
                   cpu: bool | None = None) -> list[str]:
    """Per shipped workflow: node types the server lacks, each model file present or missing (with its folder), and
    when the device is a CPU only (``cpu``), the settings too slow there with the ``--set`` that fixes each."""
    lines = []
    for workflow in WORKFLOWS.values():
        try:
            graph = load_api_workflow(workflow.api_path)
        except WanAccelError as exc:
            lines.append(f"{workflow.name}: unusable: {exc}")
            continue
        problems, file_lines = [], []
        if object_info is not None:
            absent = sorted({node["class_type"] for node in graph.values() if node["class_type"] not in object_info})
            problems += [f"node type missing on the server: {name}" for name in absent]
        for ref in model_files(graph):
            if object_info is not None:
                options = combo_options(input_spec(object_info.get(ref.class_type, {}), ref.input_name))
                present = options is not None and ref.file in options
            elif comfyui_dir is not None:
                present = ref.file in _local_files(comfyui_dir, ref.folder)
            else:
                file_lines.append(f"  [?]       models/{ref.folder}/{ref.file} (no server and no --comfyui to look in)")
                continue
            state = "[ok]     " if present else "[missing]"
            hint = "" if present else f" -> put it in ComfyUI/models/{ref.folder}/" + (
                f" (download: {DOWNLOADS[ref.file]})" if ref.file in DOWNLOADS else "")
            file_lines.append(f"  {state} models/{ref.folder}/{ref.file}{hint}")
            if not present:
                problems.append(ref.file)
        slow = cpu_warnings(graph) if cpu else []
        if problems:
            verdict = f"{len(problems)} problem(s)"
        elif object_info is None and comfyui_dir is None:
            verdict = "NOT checked (server unreachable and no --comfyui folder to look in)"
        else:
            verdict = "ready"
        lines.append(f"{workflow.name} ({workflow.ui_path.name}): {verdict}")
        lines += [f"  {p}" for p in problems if p.startswith("node type")] + file_lines
        lines += [f"  [no GPU]  {line}" for line in slow]
    return lines


def run_doctor(server: str, comfyui_dir: Path | None, out: Callable[[str], None] = print) -> int:
    """Prints the report; returns 0 when it could check the server (missing files are reported, not gated on),
    ``NOT_CHECKED_EXIT`` when the server did not answer, so a script never mistakes "not checked" for "ready"."""
    out("this machine")
    for line in runtime_lines():
        out(f"  {line}")
    client = ComfyClient(server, timeout=10.0)
    object_info = None
    cpu = local_cpu_only()
    out(f"server {mask_secrets(client.base_url)}")
    try:
        stats = client.system_stats()
        object_info = client.object_info()
    except WanAccelError as exc:
        out(f"  not reachable: {exc}")
    else:
        for line in server_lines(stats, object_info):
            out(f"  {line}")
        cpu = cpu_only(stats)
    source = "as the server lists them" if object_info is not None else (
        f"in {comfyui_dir}/models" if comfyui_dir is not None else "unknown")
    device = {True: ", device: CPU only", False: ", device: GPU", None: ""}[cpu]
    out(f"workflows (model files {source}{device})")
    for line in workflow_lines(object_info, comfyui_dir, cpu):
        out(f"  {line}")
    if object_info is None:
        out(f"could not check the server at {mask_secrets(client.base_url)} (its nodes and model lists are "
            f"unchecked): start it (or pass --server) and run doctor again")
        return NOT_CHECKED_EXIT
    return 0
