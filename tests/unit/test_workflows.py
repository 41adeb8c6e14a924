"""Shipped workflows: only UI files in the template folder, UI and API twins describe the same graph, every node,
input and combo value exists in the host's /object_info (core + ours), the winner is exactly the winning
configuration, graph_fill changes exactly what it is asked to, and doctor reports each workflow's files.

The API twins are derived from the UI files (the editor is the authoring tool): after editing a UI file, rewrite
them with ``WAN_ACCEL_WRITE_API_WORKFLOWS=1 python -m pytest tests/unit/test_workflows.py -k twins``. That run writes
the files and fails on purpose (a write is not a check); rerun without the variable to compare.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from wan_accel.client import combo_options
from wan_accel.doctor import runtime_lines, server_lines, workflow_lines
from wan_accel.errors import UsageError
from wan_accel.graph_fill import Overrides, fill, load_api_workflow, parse_setting, prompt_node
from wan_accel.workflow_catalog import (API_DIR, DOWNLOADS, MODEL_INPUTS, WORKFLOW_DIR, WORKFLOWS, find_workflow,
                                        model_files)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_HOST = REPO_ROOT.parent / "shared" / "host"
CORE_INFO_PATHS = {"0.3.64": SHARED_HOST / "object_info_core.json",
                   "0.33.0": SHARED_HOST / "object_info_core_0.33.0.json"}
"""The core hosts' /object_info, one per host version CI tests: every shipped workflow must validate on each."""
OURS_INFO_PATH = REPO_ROOT / "tests" / "data" / "object_info_wan_accel.json"
UPLOADED_INPUTS = {("LoadImage", "image")}
"""File combos listing the server's input folder: the client uploads the image, so any name is valid offline."""
UI_ONLY_TYPES = {"MarkdownNote", "Note"}   # front-end nodes: never sent to the host
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
WRITE_API = os.environ.get("WAN_ACCEL_WRITE_API_WORKFLOWS") == "1"


@pytest.fixture(scope="module", params=sorted(CORE_INFO_PATHS))
def object_info(request) -> dict:
    core = CORE_INFO_PATHS[request.param]
    if not core.is_file():
        pytest.skip(f"{core} (the {request.param} core host's /object_info) is not in this checkout")
    return {**json.loads(core.read_text()), **json.loads(OURS_INFO_PATH.read_text())}


def _input_order(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node type's inputs in the order the editor lays out its widgets."""
    out = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(specs)):
            out.append((name, specs[name]))
    return out


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _extra_widget_values(name: str, spec: list) -> int:
    """Values the editor stores after a widget's own: the seed's control mode, an image combo's upload button."""
    options = spec[1] if len(spec) > 1 else {}
    control = spec[0] == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed"))
    return int(bool(control)) + int(bool(options.get("image_upload")))


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API graph the editor queues for a UI workflow (what its 'Export (API)' writes)."""
    sources = {link[0]: (str(link[1]), link[2]) for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY_TYPES:
            continue
        info = object_info[node["type"]]
        inputs = {entry["name"]: list(sources[entry["link"]]) for entry in node.get("inputs", [])
                  if entry.get("link") is not None}
        values = list(node.get("widgets_values", []))
        optional = set(info["input"].get("optional", {}))
        for name, spec in _input_order(info):
            if _is_widget(spec):
                if not values and name in optional:
                    continue  # an optional widget newer than the workflow: the editor and the host use its default
                inputs.setdefault(name, values.pop(0))
                del values[:_extra_widget_values(name, spec)]
        assert values == [], f"node {node['id']} {node['type']}: widget values left over: {values}"
        title = node.get("title") or info.get("display_name") or node["type"]
        graph[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return dict(sorted(graph.items(), key=lambda item: int(item[0])))


def validation_errors(graph: dict, object_info: dict) -> list[str]:
    """What the host's validation would reject, checked offline: types, input names, links, combos, ranges."""
    errors = []
    for node_id, node in graph.items():
        where = f"#{node_id} {node['class_type']}"
        info = object_info.get(node["class_type"])
        if info is None:
            errors.append(f"{where}: no such node type")
            continue
        specs = dict(_input_order(info))
        required = set(info["input"].get("required", {}))
        errors += [f"{where}: required input {name} missing" for name in required - set(node["inputs"])]
        for name, value in node["inputs"].items():
            spec = specs.get(name)
            if spec is None:
                errors.append(f"{where}: no input {name}")
            elif isinstance(value, list):
                source = graph.get(value[0])
                output_type = object_info[source["class_type"]]["output"][value[1]] if source else None
                if output_type != spec[0]:
                    errors.append(f"{where}.{name}: linked to {value} of type {output_type}, needs {spec[0]}")
            elif combo_options(spec) is not None:
                options = combo_options(spec)
                is_server_file = (node["class_type"], name) in {*MODEL_INPUTS, *UPLOADED_INPUTS}
                if not (is_server_file or value in options):
                    errors.append(f"{where}.{name}: {value!r} not in {options}")
            else:
                options = spec[1] if len(spec) > 1 else {}
                kind = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}[spec[0]]
                if not isinstance(value, kind) or (spec[0] != "BOOLEAN" and isinstance(value, bool)):
                    errors.append(f"{where}.{name}: {value!r} is not {spec[0]}")
                elif spec[0] in ("INT", "FLOAT") and not options.get("min", value) <= value <= options.get("max", value):
                    errors.append(f"{where}.{name}: {value} outside [{options.get('min')}, {options.get('max')}]")
    return errors


def _upstream(graph: dict, node_id: str, input_name: str) -> str:
    return graph[node_id]["inputs"][input_name][0]


def _only(graph: dict, class_type: str) -> str:
    [node_id] = [nid for nid, node in graph.items() if node["class_type"] == class_type]
    return node_id


def test_template_folder_holds_only_the_ui_files_of_the_catalog():
    top_level = sorted(p.name for p in WORKFLOW_DIR.glob("*.json"))
    assert top_level == sorted(w.ui_path.name for w in WORKFLOWS.values())
    for path in WORKFLOW_DIR.glob("*.json"):
        assert isinstance(json.loads(path.read_text())["nodes"], list), f"{path.name} is not UI format"
    assert sorted(p.name for p in API_DIR.glob("*.json")) == sorted(w.api_path.name for w in WORKFLOWS.values())
    # the host serves the first of these folders it finds; none of the earlier ones may exist
    assert not any((REPO_ROOT / name).exists() for name in ("example_workflows", "example", "examples", "workflow"))


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_ui_and_api_twins_describe_the_same_graph(name, object_info):
    workflow = WORKFLOWS[name]
    derived = ui_to_api(json.loads(workflow.ui_path.read_text()), object_info)
    if WRITE_API:
        workflow.api_path.write_text(json.dumps(derived, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        pytest.fail(f"wrote {workflow.api_path.relative_to(REPO_ROOT)}; rerun without WAN_ACCEL_WRITE_API_WORKFLOWS "
                    "to check it", pytrace=False)
    assert load_api_workflow(workflow.api_path) == derived


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_node_input_and_value_exists_in_object_info(name, object_info):
    graph = load_api_workflow(WORKFLOWS[name].api_path)
    assert validation_errors(graph, object_info) == []
    ui = json.loads(WORKFLOWS[name].ui_path.read_text())
    assert {node["mode"] for node in ui["nodes"]} == {0}, "no muted or bypassed nodes in a shipped workflow"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_notes_name_every_model_file_and_its_folder(name):
    ui = json.loads(WORKFLOWS[name].ui_path.read_text())
    notes = "\n".join(n["widgets_values"][0] for n in ui["nodes"] if n["type"] in UI_ONLY_TYPES)
    refs = model_files(load_api_workflow(WORKFLOWS[name].api_path))
    wan22 = name.startswith("wan22")  # two experts and their LoRAs, no CLIP vision
    assert {ref.role for ref in refs} == ({"dit", "text_encoder", "vae", "lora"} if wan22 else
                                          {"dit", "text_encoder", "clip_vision", "vae"})
    for ref in refs:
        assert ref.file in notes and f"models/{ref.folder}/" in notes
        assert ref.file in DOWNLOADS


def test_offline_validation_catches_what_the_host_rejects(object_info):
    graph = load_api_workflow(WORKFLOWS["winner"].api_path)
    broken = copy.deepcopy(graph)
    sampler = _only(broken, "KSampler")
    broken[sampler]["inputs"]["sampler_name"] = "uni_pc_fast"
    broken[sampler]["inputs"]["steps"] = 0
    broken[sampler]["inputs"]["cfgg"] = 1.0
    broken[sampler]["inputs"]["latent_image"] = [_only(broken, "CLIPVisionLoader"), 0]
    assert len(validation_errors(broken, object_info)) == 4


def test_winner_is_exactly_the_winning_configuration():
    g = load_api_workflow(WORKFLOWS["winner"].api_path)
    sampler = g[_only(g, "KSampler")]["inputs"]
    assert {k: sampler[k] for k in ("sampler_name", "steps", "cfg", "denoise")} == {
        "sampler_name": "uni_pc", "steps": 8, "cfg": 1.0, "denoise": 1.0}
    shift = _upstream(g, _only(g, "KSampler"), "model")
    assert g[shift]["class_type"] == "ModelSamplingSD3" and g[shift]["inputs"]["shift"] == 8.0
    dit = g[_upstream(g, shift, "model")]
    assert dit["class_type"] == "WanAccelLoadDiTGGUF" and dit["inputs"]["unet_name"].endswith("Q6_K.gguf")
    assert dit["inputs"]["compute"] == "bf16/fp16"  # dequantise and multiply in 16 bits, as the winner did
    encoder = g[_upstream(g, prompt_node(g, "positive"), "clip")]
    assert (encoder["class_type"], encoder["inputs"]["clip_name"]) == (
        "WanAccelLoadTextEncoderFP8", "umt5_xxl_fp16.safetensors")  # stored as fp8 by the loader
    assert _upstream(g, prompt_node(g, "negative"), "clip") == _upstream(g, prompt_node(g, "positive"), "clip")
    i2v_id = _only(g, "WanImageToVideo")
    i2v = g[i2v_id]["inputs"]
    assert (i2v["width"], i2v["height"], i2v["length"], i2v["batch_size"]) == (832, 480, 81, 1)
    assert g[_upstream(g, i2v_id, "start_image")]["class_type"] == "LoadImage"
    vision_encode = _upstream(g, i2v_id, "clip_vision_output")
    vision = g[_upstream(g, vision_encode, "clip_vision")]
    assert (vision["class_type"], vision["inputs"]["clip_name"]) == ("CLIPVisionLoader", "clip_vision_h.safetensors")
    vae_id = _upstream(g, i2v_id, "vae")
    vae = g[vae_id]
    assert (vae["class_type"], vae["inputs"]) == ("WanAccelLoadVAE", {"vae_name": "wan_2.1_vae.safetensors",
                                                                      "precision": "fp16"})
    save = _only(g, "SaveVideo")
    video = _upstream(g, save, "video")
    assert g[video]["class_type"] == "CreateVideo" and g[video]["inputs"]["fps"] == 16.0
    post = _upstream(g, video, "images")
    assert g[post]["class_type"] == "WanAccelTextureColourEnhance"
    decode = _upstream(g, post, "images")
    assert g[decode]["class_type"] == "WanAccelVAEDecode"
    assert _upstream(g, decode, "samples") == _only(g, "KSampler") and _upstream(g, decode, "vae") == vae_id
    assert g[save]["inputs"]["format"] == "mp4"


def _without(graph: dict, class_types: set[str]) -> dict:
    """``graph`` with the MODEL -> MODEL patch nodes of ``class_types`` removed and their links bridged."""
    bypass = {nid: node["inputs"]["model"] for nid, node in graph.items() if node["class_type"] in class_types}
    out = {}
    for nid, node in graph.items():
        if nid in bypass:
            continue
        node = copy.deepcopy(node)
        for name, value in node["inputs"].items():
            while isinstance(value, list) and value[0] in bypass:
                value = bypass[value[0]]
            node["inputs"][name] = value
        out[nid] = node
    return out


def test_turbo_is_the_winner_plus_int8_linears_attention_patch_and_step_cache():
    turbo = load_api_workflow(WORKFLOWS["turbo"].api_path)
    winner = load_api_workflow(WORKFLOWS["winner"].api_path)
    patches = {"WanAccelPatchAttention", "WanAccelMagCache"}
    assert sorted(node["class_type"] for node in turbo.values() if node["class_type"] in patches) == sorted(patches)
    turbo_dit, winner_dit = (g[_only(g, "WanAccelLoadDiTGGUF")]["inputs"] for g in (turbo, winner))
    assert (turbo_dit["compute"], winner_dit["compute"]) == ("int8 W8A8", "bf16/fp16")
    turbo_dit["compute"] = winner_dit["compute"]
    stripped = _without(turbo, patches)
    for graph in (stripped, winner):
        graph[_only(graph, "SaveVideo")]["inputs"]["filename_prefix"] = "same"
    assert stripped == winner


def test_reference_uses_only_host_nodes_at_wan_defaults(object_info):
    g = load_api_workflow(WORKFLOWS["reference"].api_path)
    assert not [n for n in g.values() if n["class_type"].startswith("WanAccel")]
    sampler = g[_only(g, "KSampler")]["inputs"]
    assert (sampler["sampler_name"], sampler["steps"], sampler["cfg"]) == ("uni_pc", 40, 5.0)
    assert g[_only(g, "ModelSamplingSD3")]["inputs"]["shift"] == 3.0
    assert g[_only(g, "UNETLoader")]["inputs"]["unet_name"] == "wan2.1_i2v_480p_14B_bf16.safetensors"
    i2v = g[_only(g, "WanImageToVideo")]["inputs"]
    assert (i2v["width"], i2v["height"], i2v["length"]) == (832, 480, 81)


def test_fill_sets_exactly_the_requested_inputs():
    template = load_api_workflow(WORKFLOWS["winner"].api_path)
    overrides = Overrides(image="wan_accel/cat.png", prompt="a cat", negative="blurry", seed=7, steps=2, width=64,
                          height=48, length=5, fps=8.0, filename_prefix="wan_accel/x",
                          models={"dit": "tiny.gguf", "vae": "tiny_vae.safetensors"})
    filled = fill(template, overrides)
    changed = {(nid, name): value for nid, node in filled.items() for name, value in node["inputs"].items()
               if template[nid]["inputs"][name] != value}
    expect = {
        (_only(template, "LoadImage"), "image"): "wan_accel/cat.png",
        (prompt_node(template, "positive"), "text"): "a cat",
        (prompt_node(template, "negative"), "text"): "blurry",
        (_only(template, "KSampler"), "seed"): 7,
        (_only(template, "KSampler"), "steps"): 2,
        (_only(template, "WanImageToVideo"), "width"): 64,
        (_only(template, "WanImageToVideo"), "height"): 48,
        (_only(template, "WanImageToVideo"), "length"): 5,
        (_only(template, "CreateVideo"), "fps"): 8.0,
        (_only(template, "SaveVideo"), "filename_prefix"): "wan_accel/x",
        (_only(template, "WanAccelLoadDiTGGUF"), "unet_name"): "tiny.gguf",
        (model_files(template)[-1].node_id, "vae_name"): "tiny_vae.safetensors",
    }
    assert changed == expect
    assert template == load_api_workflow(WORKFLOWS["winner"].api_path), "fill must not modify its input"


def test_set_changes_any_value_input_by_node_id(object_info):
    template = load_api_workflow(WORKFLOWS["winner"].api_path)
    vae = _only(template, "WanAccelLoadVAE")
    settings = dict(parse_setting(text) for text in (f"{vae}.precision=fp32", "11.cfg=1.5", "4.scaling=per_tensor"))
    assert settings == {f"{vae}.precision": "fp32", "11.cfg": 1.5, "4.scaling": "per_tensor"}
    filled = fill(template, Overrides(settings=settings))
    assert filled[vae]["inputs"]["precision"] == "fp32" and filled["11"]["inputs"]["cfg"] == 1.5
    assert validation_errors(filled, object_info) == []
    for bad, message in (("11.model=x", "is a link"), ("99.cfg=1", "no node #99"), ("11.cfgg=1", "has no input cfgg")):
        with pytest.raises(UsageError, match=message):
            fill(template, Overrides(settings=dict([parse_setting(bad)])))
    with pytest.raises(UsageError, match="write NODE_ID.INPUT=VALUE"):
        parse_setting("precision=fp32")


def test_fill_and_load_errors_say_what_is_wrong(tmp_path):
    template = load_api_workflow(WORKFLOWS["winner"].api_path)
    with pytest.raises(UsageError, match="the seed the workflow needs a KSampler, Wan 2.2 Expert Sampler or "):
        fill({k: v for k, v in template.items() if v["class_type"] != "KSampler"}, Overrides(seed=1))
    with pytest.raises(UsageError, match="unknown model role 'unet'"):
        fill(template, Overrides(models={"unet": "x.gguf"}))
    with pytest.raises(UsageError, match="UI format"):
        load_api_workflow(WORKFLOWS["winner"].ui_path)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(UsageError, match="not readable JSON"):
        load_api_workflow(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="does not exist"):
        load_api_workflow(tmp_path / "missing.json")
    assert find_workflow("winner") == ("wan21_i2v_480p_winner", WORKFLOWS["winner"].api_path)
    assert find_workflow("my/graph.json") == ("graph", Path("my/graph.json"))


def test_doctor_lists_present_and_missing_files_per_workflow(object_info, tmp_path):
    winner = load_api_workflow(WORKFLOWS["winner"].api_path)
    served = copy.deepcopy(object_info)
    served["WanAccelLoadDiTGGUF"]["input"]["required"]["unet_name"][1]["options"] = ["wan2.1-i2v-14b-480p-Q6_K.gguf"]
    del served["WanAccelMagCache"]
    lines = workflow_lines(served, None)
    start = lines.index("winner (wan21_i2v_480p_winner.json): 3 problem(s)")
    assert lines[start + 1:start + 5] == [
        "  [ok]      models/diffusion_models/wan2.1-i2v-14b-480p-Q6_K.gguf",
        "  [missing] models/text_encoders/umt5_xxl_fp16.safetensors -> put it in ComfyUI/models/text_encoders/ "
        f"(download: {DOWNLOADS['umt5_xxl_fp16.safetensors']})",
        "  [missing] models/clip_vision/clip_vision_h.safetensors -> put it in ComfyUI/models/clip_vision/ "
        f"(download: {DOWNLOADS['clip_vision_h.safetensors']})",
        "  [missing] models/vae/wan_2.1_vae.safetensors -> put it in ComfyUI/models/vae/ "
        f"(download: {DOWNLOADS['wan_2.1_vae.safetensors']})"]
    assert "  node type missing on the server: WanAccelMagCache" in lines
    assert len(model_files(winner)) == 4

    for folder, name in (("unet", "wan2.1-i2v-14b-480p-Q6_K.gguf"), ("clip", "umt5_xxl_fp16.safetensors"),
                         ("clip_vision", "clip_vision_h.safetensors"), ("vae", "wan_2.1_vae.safetensors")):
        (tmp_path / "models" / folder).mkdir(parents=True)
        (tmp_path / "models" / folder / name).write_bytes(b"")
    offline = workflow_lines(None, tmp_path)
    assert offline[0] == "winner (wan21_i2v_480p_winner.json): ready"
    assert "reference (wan21_i2v_480p_reference.json): 1 problem(s)" in offline


def test_doctor_reports_this_machine_and_the_server():
    runtime = "\n".join(runtime_lines())
    assert "torch " in runtime and "fp8 e4m3fn storage" in runtime
    assert "triton" in runtime and "sageattention" in runtime
    stats = {"system": {"comfyui_version": "0.3.64", "pytorch_version": "2.13.0", "python_version": "3.11.7 (main)"},
             "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 4090", "vram_total": 24 * 2**30, "vram_free": 20 * 2**30}]}
    assert server_lines(stats, {"WanAccelLoadDiTGGUF": {}, "KSampler": {}}) == [
        "ComfyUI 0.3.64, torch 2.13.0, python 3.11.7",
        "device cuda:0 NVIDIA GeForce RTX 4090: 24.0 GiB total, 20.0 GiB free",
        "wan-accel nodes loaded: 1 (WanAccelLoadDiTGGUF)"]
