"""Our nodes' live stats, end to end: the GET route after an API run, then the editor in headless Chromium.

The browser test loads the shipped winner workflow (``workflows/wan21_i2v_480p_winner.json``) on the tiny models,
checks that no node is reported missing, queues it with the editor's Queue Prompt command (what its Run button
calls, on the 0.3.64 and the 0.33 front end alike), and reads back the stats our web extension keeps and the panel
text the canvas paints under our nodes. Then it changes the graph (the panels must clear), queues again (the GGUF
loader comes from the host's cache: its panel must come back, marked cached; the post-process runs again) and
reloads the editor (the panels must come back from ``GET /wan_accel/stats``). Screenshots go to ``test-artifacts/``.
Needs Debian's chromium (``apt-get install -y chromium``), Node.js and ``npm ci`` in tests/browser: skipped without
them, failed without them when ``WAN_ACCEL_REQUIRE_BROWSER=1`` (CI).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from wan_accel_kernels.gguf.reader import read_gguf
from tests.support import graphs
from tests.support.host_inprocess import import_host
from tests.support.clip_vision_stub import write_clip_vision_h_stub
from tests.support.tiny_models import write_random_image, write_tiny_wan_i2v
from tests.support.umt5_files import write_small_umt5
from wan_accel.convert import convert
from wan_accel.workflow_catalog import MODEL_INPUTS

REPO_ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = REPO_ROOT / "tests" / "browser"
BROWSER_SCRIPT = BROWSER_DIR / "editor_stats.mjs"
ARTIFACTS = REPO_ROOT / "test-artifacts"
WINNER = REPO_ROOT / "workflows" / "wan21_i2v_480p_winner.json"
CHROMIUM = Path("/usr/bin/chromium")
LOADER_TYPE = "WanAccelLoadDiTGGUF"
ENHANCE_TYPE = "WanAccelTextureColourEnhance"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DIT_SHAPE = dict(dim=256, layers=2, ffn=512)
OK_ACCENT, WARN_ACCENT = "#3fb68b", "#e6a23c"
CPU_WARNING = "weights dequantise on the CPU: no GPU in use"
REQUIRE_BROWSER = "WAN_ACCEL_REQUIRE_BROWSER"
OUR_PATHS = ("/extensions/wan_accel/", "/wan_accel/stats")
HOST_PROFILE_PROBES = re.compile(r"/(api/userdata/)?user\.css|/api/userdata/comfy\.templates\.json|"
                                 r"/api/userdata\?dir=(workflows|subgraphs)(%2F)?&.*")
"""What both hosts' editors ask for at start that a new user has not got, answered 404: the user's own stylesheet
(``index.html`` links ``user.css`` and ``api/userdata/user.css``; the first is never there), saved node templates,
and the saved-workflow and subgraph folders."""


@pytest.fixture(scope="module")
def gguf_file(wan_pack, tmp_path_factory) -> Path:
    """The dim-256 tiny DiT converted to Q6_K."""
    folder = tmp_path_factory.mktemp("stats_gguf")
    source = write_tiny_wan_i2v(folder / "wan_tiny256.safetensors", **DIT_SHAPE)
    return convert(source, folder / "wan_tiny256-Q6_K.gguf", "Q6_K", progress=False)


def _loader(unet_name: str) -> tuple[str, dict]:
    return LOADER_TYPE, {"unet_name": unet_name, "compute_dtype": "fp32"}


def _weights_line(path: Path, resident_mib: str) -> str:
    types = " ".join(f"{name}×{count}" for name, count in sorted(read_gguf(path).type_counts().items()))
    return f"weights: {types} · {resident_mib} MiB resident"


def _resident_mib(summary: str) -> str:
    return re.search(r"weights in memory ([0-9.]+) MiB", summary).group(1)


def test_stats_route_keeps_what_the_gguf_loader_reported(wan_pack, gguf_file):
    name = wan_pack.add_model("diffusion_models", gguf_file, "wan_tiny256_route-Q6_K.gguf")
    history = wan_pack.run(graphs.tiny_i2v_graph(loader=_loader(name), filename_prefix="latents/stats_route"))
    summary = history["outputs"][graphs.NODE["model"]]["text"][0]
    kept = wan_pack.get_json("/wan_accel/stats")["nodes"][graphs.NODE["model"]]
    print(f"\nnode text: {summary}\nkept stats: {json.dumps(kept, ensure_ascii=False)}")
    assert kept["node_type"] == LOADER_TYPE and kept["prompt_id"] in wan_pack.history()
    assert kept["stats"]["weight_types"] == read_gguf(gguf_file).type_counts()
    assert f"{kept['stats']['resident_bytes'] / 2**20:.1f}" == _resident_mib(summary)
    assert "float32 on cpu" in kept["stats"]["dequant_path"]
    assert kept["lines"] == [f"dequant: {kept['stats']['dequant_path']}", _weights_line(gguf_file, _resident_mib(summary))]
    assert kept["warnings"] == [CPU_WARNING]
    assert wan_pack.get_json("/api/wan_accel/stats")["nodes"][graphs.NODE["model"]] == kept


def _widget_slots(info: dict) -> list[str | None]:
    """A node type's widget values in the editor's order; None marks the extra value a seed's control mode or an
    image upload stores after its widget's own."""
    slots: list[str | None] = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(specs)):
            kind, options = specs[name][0], (specs[name][1:] or [{}])[0]
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                slots.append(name)
                if options.get("control_after_generate") or options.get("image_upload"):
                    slots.append(None)
    return slots


def tiny_winner_workflow(names: dict[str, str], object_info: dict) -> dict:
    """The shipped winner workflow (UI format) on the tiny models: model files by role (``MODEL_INPUTS``), the
    start image, 64x64, 5 frames, 4 steps, DiT and VAE in fp32 (fp16 convolutions crawl on a CPU). The loaders'
    download notes are dropped: they name the real files, which the editor would report missing."""
    workflow = copy.deepcopy(json.loads(WINNER.read_text(encoding="utf-8")))
    values: dict[tuple[str, str], object] = {key: names[role] for key, (role, _) in MODEL_INPUTS.items()
                                             if role in names}   # the winner has no LoRA
    values.update({("LoadImage", "image"): names["image"], ("WanImageToVideo", "width"): 64,
                   ("WanImageToVideo", "height"): 64, ("WanImageToVideo", "length"): 5, ("KSampler", "steps"): 4,
                   (LOADER_TYPE, "compute_dtype"): "fp32", ("WanAccelLoadVAE", "precision"): "fp32"})
    for node in workflow["nodes"]:
        node.get("properties", {}).pop("models", None)
        if node["type"] in object_info:
            for index, name in enumerate(_widget_slots(object_info[node["type"]])):
                if (node["type"], name) in values:
                    node["widgets_values"][index] = values[node["type"], name]
    return workflow


def _browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium)"
    if shutil.which("node") is None:
        return "node missing: install Node.js 20 or newer"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return f"{BROWSER_DIR / 'node_modules'} has no playwright-core: run `npm ci` in tests/browser"
    return None


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Skips the browser test when chromium, node or playwright-core is missing; fails instead when
    ``WAN_ACCEL_REQUIRE_BROWSER=1`` (CI), where a missing piece is a broken setup, not an optional one.
    Session-scoped and first in the test's arguments, so it decides before the host starts and models are written."""
    missing = _browser_missing()
    if missing and os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{REQUIRE_BROWSER}=1 but {missing}", pytrace=False)
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def winner_models(wan_pack, gguf_file) -> dict[str, str]:
    """Graph names of the stand-ins the winner workflow gets: tiny GGUF DiT, small complete umt5 (the fp8 text
    encoder loader builds it at the file's shape), sparse ViT-H, random Wan VAE, a 64x64 start image."""
    from tests.support.wan_vae_weights import write_wan21_vae

    import_host()
    t0 = time.monotonic()
    names = {"dit": wan_pack.add_model("diffusion_models", gguf_file, "wan_tiny256_browser-Q6_K.gguf"),
             "text_encoder": wan_pack.add_model("text_encoders", write_small_umt5, "browser_umt5_small.safetensors"),
             "clip_vision": wan_pack.add_model("clip_vision", write_clip_vision_h_stub, "browser_vit_h_zero.safetensors"),
             "vae": wan_pack.add_model("vae", write_wan21_vae, "browser_wan21_vae_random.safetensors"),
             "image": wan_pack.add_input(lambda path: write_random_image(path, 64, 64, seed=5), "browser_start.png")}
    print(f"\n[browser] umt5, ViT-H stub, VAE and image written in {time.monotonic() - t0:.1f} s")
    return names


def _run_editor_script(wan_pack, workflow: dict, tmp_path: Path, sampler_id: int) -> dict:
    workflow_path, result_path = tmp_path / "workflow.json", tmp_path / "result.json"
    workflow_path.write_text(json.dumps(workflow))
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    command = ["node", str(BROWSER_SCRIPT), "--url", wan_pack.url, "--workflow", str(workflow_path),
               "--screenshots", str(ARTIFACTS), "--result", str(result_path),
               "--changed-widget", f"{sampler_id}:steps=3", "--timeout-ms", "300000"]
    t0 = time.monotonic()
    try:
        done = subprocess.run(command, cwd=BROWSER_DIR, env=env, capture_output=True, text=True, timeout=1500)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the browser script ran past 1500 s\n{wan_pack.log_tail()}")
    print(f"\n[browser] editor session {time.monotonic() - t0:.1f} s")
    if not result_path.is_file():
        pytest.fail(f"the browser script wrote no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(result_path.read_text())
    assert "error" not in result, f"{result['error']}\n{done.stderr}\n{wan_pack.log_tail()}"
    return result


def _by_type(nodes: list[dict]) -> dict[str, dict]:
    return {node["type"]: node for node in nodes}


def _fits(drawn: str, text: str) -> bool:
    """``drawn`` is ``text``, or its start cut with an ellipsis to fit the panel's width."""
    return drawn == text or (drawn.endswith("…") and len(drawn) > 10 and text.startswith(drawn[:-1]))


def _header(stats: dict) -> str:
    """The panel's first row: the time the server sent the stats, in the browser's clock (UTC, set by the script)."""
    clock = time.strftime("%H:%M:%S", time.gmtime(stats["time"]))
    return f"⚡ wan-accel · {'cached, ' if stats['cached'] else ''}{clock}"


def _panel_matches(node: dict) -> bool:
    """The canvas painted, under the node, the header and then every line and warning the node holds, in order;
    and that is what the extension says it drew."""
    rows = node["canvas_rows"]
    wanted = node["stats"]["lines"] + [f"⚠ {warning}" for warning in node["stats"]["warnings"]]
    return rows == node["drawn"]["rows"] and rows[0] == _header(node["stats"]) and len(rows) == len(wanted) + 1 \
        and all(_fits(row, text) for row, text in zip(rows[1:], wanted))


def _panel_report(node: dict) -> str:
    """What a failed panel check prints: the rows painted, the rows the extension recorded, the stats held."""
    drawn = (node["drawn"] or {}).get("rows")
    return f"{node['type']}: canvas painted {node['canvas_rows']}, extension drew {drawn}, stats {node['stats']}"


def _is_ours(text: str) -> bool:
    """``text`` names our web extension's script or our stats route (not merely our output subfolder)."""
    return any(path in text for path in OUR_PATHS)


def _assert_page_was_clean(result: dict) -> None:
    """Our script and route answered 200 on every load; the host answered nothing else >= 400 than its probes for
    a new user's missing files; no error was logged or thrown by our script."""
    ours = {(request["path"], request["status"]) for request in result["our_requests"]}
    assert ours == {(OUR_PATHS[0] + "wan_accel.js", 200), ("/api" + OUR_PATHS[1], 200)}, ours
    assert [e for e in result["http_errors"] if not HOST_PROFILE_PROBES.fullmatch(e.split(" ", 1)[1])] == []
    assert [f for f in result["request_failures"] if _is_ours(f)] == []
    assert [e for e in result["console_errors"] if _is_ours(e["url"]) or "wan-accel" in e["text"]] == []
    assert [e for e in result["page_errors"] if _is_ours(e)] == []


def test_editor_shows_clears_and_restores_the_stats_under_our_nodes(browser_ready, wan_pack, gguf_file,
                                                                    winner_models, tmp_path):
    workflow = tiny_winner_workflow(winner_models, wan_pack.object_info())
    sampler_id = next(node["id"] for node in workflow["nodes"] if node["type"] == "KSampler")
    ours = sorted(node["type"] for node in workflow["nodes"] if node["type"].startswith("WanAccel"))
    ARTIFACTS.mkdir(exist_ok=True)
    result = _run_editor_script(wan_pack, workflow, tmp_path, sampler_id)
    steps = result["steps"]
    _assert_page_was_clean(result)
    assert sum(r["path"].endswith(".js") for r in result["our_requests"]) == 2  # the first load and the reload

    assert steps["load"]["missing"] == [] and not any("missing" in text.lower() for text in steps["load"]["dialogs"])
    assert sorted(steps["load"]["node_types"]) == sorted(node["type"] for node in workflow["nodes"])

    first = _by_type(steps["first_run"]["nodes"])
    first_id = steps["first_run"]["detail"]["prompt_id"]
    assert sorted(first) == ours and LOADER_TYPE in first and ENHANCE_TYPE in first
    for node in first.values():
        assert (node["color"], node["bgcolor"]) == ("#1f4e5f", "#163843")
        assert node["stats"]["cached"] is False and node["stats"]["prompt_id"] == first_id
        assert _panel_matches(node), _panel_report(node)
        assert node["drawn"]["accent"] == (WARN_ACCENT if node["stats"]["warnings"] else OK_ACCENT)
    loader, enhance = first[LOADER_TYPE], first[ENHANCE_TYPE]
    weights_line = _weights_line(gguf_file, f"{loader['stats']['stats']['resident_bytes'] / 2**20:.1f}")
    assert loader["stats"]["lines"][1] == weights_line and loader["stats"]["warnings"] == [CPU_WARNING]
    assert loader["stats"]["lines"][0] == f"dequant: {loader['stats']['stats']['dequant_path']}"
    assert "float32 on cpu" in loader["stats"]["stats"]["dequant_path"]
    frame_time = enhance["stats"]["stats"]["seconds_per_frame"]
    assert enhance["stats"]["lines"] == [f"time: {frame_time * 1000:.0f} ms/frame" if frame_time < 1
                                         else f"time: {frame_time:.1f} s/frame", "5 frames 64×64 on cpu"]

    assert all(node["stats"] is None for node in steps["after_change"]["nodes"])

    second = _by_type(steps["second_run"]["nodes"])
    second_id = steps["second_run"]["detail"]["prompt_id"]
    reran = {node_type for node_type, node in second.items() if node["stats"]["prompt_id"] == second_id}
    assert {LOADER_TYPE, ENHANCE_TYPE} <= set(second) and ENHANCE_TYPE in reran and LOADER_TYPE not in reran
    for node_type, node in second.items():
        assert node["stats"]["cached"] is (node_type not in reran) and _panel_matches(node), _panel_report(node)
        assert node["drawn"]["rows"][0].startswith("⚡ wan-accel · cached, ") is (node_type not in reran)
    assert second[LOADER_TYPE]["stats"]["lines"] == loader["stats"]["lines"]

    restored = _by_type(steps["after_reload"]["nodes"])
    assert {t: n["stats"]["lines"] for t, n in restored.items()} == {t: n["stats"]["lines"] for t, n in second.items()}
    assert {t: n["stats"]["time"] for t, n in restored.items()} == {t: n["stats"]["time"] for t, n in second.items()}
    for node in restored.values():
        assert _panel_matches(node), _panel_report(node)
    assert all((ARTIFACTS / name).stat().st_size > 20_000 for name in result["screenshots"])
    print(f"[browser] runs from the editor: {steps['first_run']['seconds']:.1f} s, then "
          f"{steps['second_run']['seconds']:.1f} s (re-ran: {sorted(reran)}); screenshots {result['screenshots']} in "
          f"{ARTIFACTS}")
    for node_type, node in first.items():
        print(f"  {node_type}: {node['drawn']['rows']}")
