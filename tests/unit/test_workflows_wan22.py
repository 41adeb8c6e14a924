"""The shipped Wan 2.2 I2V A14B workflows: each is the configuration it claims, and the CLI's overrides find the right
expert (``--dit-high`` / ``--dit-low``), the seed and steps of both samplers, and refuse ``--dit`` on two experts.

Validation against both hosts' /object_info, the UI/API twins and the model-file notes are checked for every shipped
workflow in ``test_workflows.py``.
"""
from __future__ import annotations

import pytest

from tests.unit.test_workflows import _only, _without
from wan_accel.errors import UsageError
from wan_accel.graph_experts import expert_loaders, sampler_nodes
from wan_accel.graph_fill import Overrides, fill, load_api_workflow, prompt_node
from wan_accel.workflow_catalog import DOWNLOADS, WORKFLOWS, find_workflow, model_files

HIGH_LORA = "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"
LOW_LORA = "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"


def graph(name: str) -> dict:
    return load_api_workflow(WORKFLOWS[name].api_path)


def chain(g: dict, link: list) -> list[tuple[str, dict]]:
    """(class_type, widget inputs) from a MODEL link up to its loader."""
    out = []
    while isinstance(link, list):
        node = g[link[0]]
        out.append((node["class_type"], {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}))
        link = node["inputs"].get("model")
    return out


def test_4step_is_two_q6k_experts_with_4step_loras_attention_patch_and_no_cache():
    g = graph("wan22_4step")
    sampler = g[_only(g, "WanAccelExpertSampler")]["inputs"]
    assert {k: sampler[k] for k in ("steps", "cfg_high", "cfg_low", "sampler_name", "scheduler", "switch_at",
                                    "boundary")} == {
        "steps": 4, "cfg_high": 1.0, "cfg_low": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "switch_at": "boundary sigma", "boundary": 0.9}
    for model_input, lora, strength, gguf in (("high_noise_model", HIGH_LORA, 3.0, "HighNoise-Q6_K.gguf"),
                                              ("low_noise_model", LOW_LORA, 1.0, "LowNoise-Q6_K.gguf")):
        assert [c for c, _ in chain(g, sampler[model_input])] == [
            "WanAccelPatchAttention", "ModelSamplingSD3", "LoraLoaderModelOnly", "WanAccelLoadDiTGGUF"]
        patch, shift, lora_node, loader = (inputs for _, inputs in chain(g, sampler[model_input]))
        assert shift["shift"] == 5.0 and lora_node == {"lora_name": lora, "strength_model": strength}
        assert loader["unet_name"].endswith(gguf) and loader["compute"] == "bf16/fp16"
    assert not [n for n in g.values() if n["class_type"] in ("WanAccelTeaCache", "WanAccelMagCache")]
    assert [n["class_type"] for n in g.values() if n["class_type"] == "WanAccelTextureColourEnhance"]
    i2v = g[_only(g, "WanImageToVideo")]["inputs"]
    assert (i2v["width"], i2v["height"], i2v["length"]) == (832, 480, 81) and "clip_vision_output" not in i2v


def test_turbo_is_the_4step_with_int8_experts():
    turbo, four = graph("wan22_turbo"), graph("wan22_4step")
    for g, compute in ((turbo, "int8 W8A8"), (four, "bf16/fp16")):
        assert [n["inputs"]["compute"] for n in g.values() if n["class_type"] == "WanAccelLoadDiTGGUF"] == [compute] * 2
    for nid, node in turbo.items():
        if node["class_type"] in ("WanAccelLoadDiTGGUF", "SaveVideo"):
            node.update(inputs=four[nid]["inputs"], _meta=four[nid]["_meta"])
    assert turbo == four


def test_reference_is_the_hosts_template_at_the_same_settings():
    ref, four = graph("wan22_reference"), graph("wan22_4step")
    assert not [n for n in ref.values() if n["class_type"].startswith("WanAccel")]
    high, low = (ref[nid]["inputs"] for nid in sampler_nodes(ref))
    assert (high["add_noise"], high["start_at_step"], high["end_at_step"], high["return_with_leftover_noise"]) == (
        "enable", 0, 2, "enable")
    assert (low["add_noise"], low["start_at_step"], low["end_at_step"], low["return_with_leftover_noise"]) == (
        "disable", 2, 10000, "disable")
    assert high["noise_seed"] == four[_only(four, "WanAccelExpertSampler")]["inputs"]["noise_seed"]
    assert [c for c, _ in chain(ref, high["model"])] == ["ModelSamplingSD3", "LoraLoaderModelOnly", "UNETLoader"]
    assert {ref_.file for ref_ in model_files(ref) if ref_.role == "dit"} == {
        "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"}
    ours = _without(four, {"WanAccelPatchAttention"})
    lora_strengths = [(n["inputs"]["lora_name"], n["inputs"]["strength_model"]) for n in ours.values()
                      if n["class_type"] == "LoraLoaderModelOnly"]
    assert lora_strengths == [(n["inputs"]["lora_name"], n["inputs"]["strength_model"]) for n in ref.values()
                              if n["class_type"] == "LoraLoaderModelOnly"] == [(HIGH_LORA, 3.0), (LOW_LORA, 1.0)]


@pytest.mark.parametrize("name", ["wan22_4step", "wan22_turbo", "wan22_reference"])
def test_expert_loaders_are_found_from_the_graph_and_every_file_has_a_download(name):
    g = graph(name)
    loaders = expert_loaders(g)
    files = {ref.node_id: ref.file for ref in model_files(g)}
    assert "high" in files[loaders["dit_high"]].lower() and "low" in files[loaders["dit_low"]].lower()
    assert all(file in DOWNLOADS for file in files.values())
    assert find_workflow(WORKFLOWS[name].stem)[1] == WORKFLOWS[name].api_path
    assert expert_loaders(load_api_workflow(WORKFLOWS["winner"].api_path)) == {}


@pytest.mark.parametrize("name", ["wan22_4step", "wan22_reference"])
def test_fill_sets_each_expert_the_seed_and_steps_of_both_samplers(name):
    template = graph(name)
    filled = fill(template, Overrides(prompt="a cat", seed=7, steps=8,
                                      models={"dit_high": "h.gguf", "dit_low": "l.gguf", "vae": "v.safetensors"}))
    loaders = expert_loaders(template)
    assert filled[loaders["dit_high"]]["inputs"]["unet_name"] == "h.gguf"
    assert filled[loaders["dit_low"]]["inputs"]["unet_name"] == "l.gguf"
    assert filled[prompt_node(template, "positive")]["inputs"]["text"] == "a cat"
    for nid in sampler_nodes(template):
        assert filled[nid]["inputs"]["noise_seed"] == 7 and filled[nid]["inputs"]["steps"] == 8
    if name == "wan22_reference":  # the host pair keeps its switch at half the run
        high, low = (filled[nid]["inputs"] for nid in sampler_nodes(template))
        assert (high["end_at_step"], low["start_at_step"], low["end_at_step"]) == (4, 4, 10000)
        two = fill(template, Overrides(steps=2))
        assert [two[nid]["inputs"]["start_at_step"] for nid in sampler_nodes(template)] == [0, 1]


def test_one_dit_flag_on_two_experts_and_expert_flags_on_one_model_are_refused():
    with pytest.raises(UsageError, match="two experts: give their files with --dit-high and --dit-low"):
        fill(graph("wan22_4step"), Overrides(models={"dit": "x.gguf"}))
    with pytest.raises(UsageError, match="--dit-high needs a Wan 2.2 workflow"):
        fill(load_api_workflow(WORKFLOWS["winner"].api_path), Overrides(models={"dit_high": "x.gguf"}))
