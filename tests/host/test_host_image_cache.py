""""CLIP Vision Encode (cached)" and "WanImageToVideo (cached)": hits are bit-identical to uncached runs, a changed
image misses.

CLIP vision is tested two ways. In-process, on the host's own ``ClipVisionModel`` class built from a reduced config
(2 layers, width 64; the cache code path is the node's): field-by-field equality with ``encode_image``, a hit that
never loads the model, misses for a changed image or crop, a corrupt entry recomputed. Through POST /prompt, with
a full-size ViT-H file whose big matrices are zeros (``tests/support/clip_vision_stub.py``; each encode costs
~0.3 TFLOP on the CPU): the cached graph's sampled latent equals the host graph's (CLIPVisionLoader +
CLIPVisionEncode + WanImageToVideo) bit for bit, and a re-run with the same pixels under another file name hits.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.support import graphs
from tests.support.clip_vision_stub import write_clip_vision_h_stub
from tests.support.comfy_server import read_latent
from tests.support.host_inprocess import import_host, import_pack_module, loaded_entries
from tests.support.tiny_models import write_random_image
from tests.support.wan_vae_weights import wan21_vae_state_dict, write_wan21_vae

VAE_NAME = "wan21_vae_random.safetensors"
CLIP_NAME = "clip_vision_h_stub.safetensors"
SIZE, LENGTH = 32, 5
REDUCED_CLIP_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "projection_dim": 32,
                       "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
                       "model_type": "clip_vision_model"}


@pytest.fixture(scope="module")
def cache_nodes():
    return import_pack_module("nodes.image_encoder_cache")


@pytest.fixture(scope="module")
def reduced_clip_vision(tmp_path_factory):
    """The host's ClipVisionModel on a reduced config with random weights, and those weights as a file."""
    import_host()
    import comfy.clip_vision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip_vision")
    config = folder / "reduced_clip_vision.json"
    config.write_text(json.dumps(REDUCED_CLIP_CONFIG))
    model = comfy.clip_vision.ClipVisionModel(str(config))
    generator = torch.Generator().manual_seed(0)
    state_dict = {name: torch.randn(t.shape, generator=generator).to(t.dtype) * 0.1
                  for name, t in model.get_sd().items()}
    model.load_sd(state_dict)
    save_file(state_dict, str(folder / "reduced_clip_vision.safetensors"))
    return model, str(folder / "reduced_clip_vision.safetensors")


def _image(seed: int, height: int = 40, width: int = 56) -> torch.Tensor:
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _loader_that_fails(path: str, identity: str):
    raise AssertionError("a cache hit must not load the CLIP-vision model")


def test_clip_vision_hit_is_bit_identical_and_skips_the_model(reduced_clip_vision, cache_nodes, tmp_path):
    from wan_accel_kernels.prompt_cache import PromptCacheStore

    model, path = reduced_clip_vision
    store = PromptCacheStore(tmp_path / "cache", max_bytes=1 << 26)
    image = _image(0)
    with torch.inference_mode():
        direct = model.encode_image(image, crop=True)
        missed, hit_first = cache_nodes.encode_clip_vision_cached(store, path, image, "center",
                                                                  load=lambda *_: model)
        hit, hit_second = cache_nodes.encode_clip_vision_cached(store, path, image.clone(), "center",
                                                                load=_loader_that_fails)
    fields = sorted(vars(direct))
    print(f"\nfields {fields}; first call hit={hit_first}, second call hit={hit_second}")
    assert (hit_first, hit_second) == (False, True)
    assert sorted(vars(hit)) == fields and hit["mm_projected"] is None
    for name in fields:
        if isinstance(direct[name], torch.Tensor):
            assert torch.equal(missed[name], direct[name]) and torch.equal(hit[name], direct[name]), name
            assert hit[name].dtype == direct[name].dtype
        else:  # None, or 0.33's image_sizes list
            assert missed[name] == direct[name] and hit[name] == direct[name], name


def test_clip_vision_changed_image_or_crop_misses_and_a_corrupt_entry_is_recomputed(reduced_clip_vision, cache_nodes,
                                                                                   tmp_path):
    from wan_accel_kernels.prompt_cache import PromptCacheStore

    model, path = reduced_clip_vision
    store = PromptCacheStore(tmp_path / "cache", max_bytes=1 << 26)
    image = _image(1)
    changed = image.clone()
    changed[0, 7, 9, 2] += 1.0 / 255
    with torch.inference_mode():
        first, _ = cache_nodes.encode_clip_vision_cached(store, path, image, "center", load=lambda *_: model)
        other, hit_changed = cache_nodes.encode_clip_vision_cached(store, path, changed, "center",
                                                                   load=lambda *_: model)
        _, hit_crop = cache_nodes.encode_clip_vision_cached(store, path, image, "none", load=lambda *_: model)
        for entry in store.entries():
            entry.write_bytes(b"\x00" * 16)
        again, hit_corrupt = cache_nodes.encode_clip_vision_cached(store, path, image, "center",
                                                                   load=lambda *_: model)
        _, hit_rewritten = cache_nodes.encode_clip_vision_cached(store, path, image, "center",
                                                                 load=_loader_that_fails)
    assert (hit_changed, hit_crop, hit_corrupt, hit_rewritten) == (False, False, False, True)
    assert not torch.equal(other["penultimate_hidden_states"], first["penultimate_hidden_states"])
    assert torch.equal(again["penultimate_hidden_states"], first["penultimate_hidden_states"])


def test_a_host_unload_releases_the_kept_clip_vision_model(reduced_clip_vision, cache_nodes, tmp_path, monkeypatch):
    import gc
    import weakref

    import comfy.clip_vision
    import comfy.model_management
    from wan_accel_kernels.prompt_cache import PromptCacheStore

    _, path = reduced_clip_vision
    config = str(tmp_path / "reduced.json")
    with open(config, "w") as handle:
        json.dump(REDUCED_CLIP_CONFIG, handle)
    loads = []

    def load_reduced(file: str) -> comfy.clip_vision.ClipVisionModel:
        from safetensors.torch import load_file
        model = comfy.clip_vision.ClipVisionModel(config)
        model.load_sd(load_file(file))
        loads.append(file)
        return model

    monkeypatch.setattr(comfy.clip_vision, "load", load_reduced)
    cache_nodes._kept_clip_vision.release()
    store = PromptCacheStore(tmp_path / "cache", max_bytes=1 << 26)
    with torch.inference_mode():
        missed, _ = cache_nodes.encode_clip_vision_cached(store, path, _image(6), "center")
        cache_nodes.encode_clip_vision_cached(store, path, _image(7), "center")
        kept = weakref.ref(cache_nodes._kept_clip_vision.value.model)
        before = loaded_entries(kept())
        comfy.model_management.unload_all_models()  # what POST /free with unload_models does
        gc.collect()
        after = loaded_entries(kept())
        hit, was_hit = cache_nodes.encode_clip_vision_cached(store, path, _image(6), "center",
                                                             load=_loader_that_fails)
        _, was_hit_new = cache_nodes.encode_clip_vision_cached(store, path, _image(8), "center")
    print(f"\nloads {len(loads)}; kept model loaded {before} before, {after} after the unload; "
          f"alive after gc: {kept() is not None}")
    assert before == 1 and after == 0 and kept() is None
    assert was_hit and not was_hit_new and len(loads) == 2
    assert torch.equal(hit["penultimate_hidden_states"], missed["penultimate_hidden_states"])


def test_i2v_node_equals_the_host_node_and_hits_on_rerun(cache_nodes, tmp_path):
    import comfy.sd
    import folder_paths
    from comfy_extras.nodes_wan import WanImageToVideo

    vae = comfy.sd.VAE(sd=wan21_vae_state_dict(), dtype=torch.float32)
    positive = [[torch.zeros(1, 3, 4096), {}]]
    negative = [[torch.ones(1, 3, 4096), {}]]
    inputs = dict(positive=positive, negative=negative, vae=vae, width=SIZE, height=SIZE, length=LENGTH,
                  batch_size=1)
    user_directory = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(tmp_path / "user"))
    try:
        with torch.inference_mode():
            host = WanImageToVideo.execute(**inputs, start_image=_image(2, SIZE, SIZE)).args
            runs = [cache_nodes.WanImageToVideoCached.execute(**inputs, start_image=_image(seed, SIZE, SIZE))
                    for seed in (2, 2, 3)]
    finally:
        folder_paths.set_user_directory(user_directory)
    texts = [run.ui.as_dict()["text"][0] for run in runs]
    print(f"\n{texts}")
    assert texts == ["conditioning latent: cache miss (encoded and stored)", "conditioning latent: cache hit",
                     "conditioning latent: cache miss (encoded and stored)"]
    host_cond = host[0][0][1]
    for run in runs[:2]:
        cond = run.args[0][0][1]
        assert torch.equal(cond["concat_latent_image"], host_cond["concat_latent_image"])
        assert torch.equal(cond["concat_mask"], host_cond["concat_mask"])
        assert torch.equal(run.args[1][0][1]["concat_latent_image"], host[1][0][1]["concat_latent_image"])
        assert torch.equal(run.args[2]["samples"], host[2]["samples"])
    assert not torch.equal(runs[2].args[0][0][1]["concat_latent_image"], host_cond["concat_latent_image"])


def _i2v_graph(image: str, *, cached: bool, clip_vision: bool, prefix: str) -> dict:
    """The tiny I2V graph conditioned on ``image`` through the host's nodes or ours (VAE from the host's VAELoader)."""
    graph = graphs.tiny_i2v_graph(width=SIZE, height=SIZE, length=LENGTH, filename_prefix=f"latents/{prefix}")
    del graph[graphs.NODE["latent"]]
    graph["20"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    graph["21"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}}
    i2v_inputs = {"positive": [graphs.NODE["positive"], 0], "negative": [graphs.NODE["negative"], 0],
                  "vae": ["21", 0], "width": SIZE, "height": SIZE, "length": LENGTH, "batch_size": 1,
                  "start_image": ["20", 0]}
    if clip_vision and cached:
        graph["23"] = {"class_type": "WanAccelCLIPVisionEncodeCached",
                       "inputs": {"clip_name": CLIP_NAME, "image": ["20", 0], "crop": "center"}}
    elif clip_vision:
        graph["22"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_NAME}}
        graph["23"] = {"class_type": "CLIPVisionEncode",
                       "inputs": {"clip_vision": ["22", 0], "image": ["20", 0], "crop": "center"}}
    if clip_vision:
        i2v_inputs["clip_vision_output"] = ["23", 0]
    graph["24"] = {"class_type": "WanAccelImageToVideoCached" if cached else "WanImageToVideo", "inputs": i2v_inputs}
    sampler = graph[graphs.NODE["sampler"]]["inputs"]
    sampler.update(positive=["24", 0], negative=["24", 1], latent_image=["24", 2])
    return graph


@pytest.fixture(scope="module")
def server_files(wan_pack, tmp_path_factory):
    """The random VAE, the ViT-H stub and two start images (the first also under a second name) in the server."""
    folder = tmp_path_factory.mktemp("image_cache")
    wan_pack.add_model("vae", write_wan21_vae(folder / VAE_NAME))
    wan_pack.add_model("clip_vision", write_clip_vision_h_stub, CLIP_NAME)
    first = write_random_image(folder / "first.png", SIZE, SIZE, seed=4)
    shutil.copy(first, folder / "first_again.png")
    names = {"first": wan_pack.add_input(first), "first_again": wan_pack.add_input(folder / "first_again.png"),
             "second": wan_pack.add_input(write_random_image(folder / "second.png", SIZE, SIZE, seed=5))}
    return names


def _run(server, graph: dict) -> tuple[torch.Tensor, dict]:
    history = server.run(graph)
    outputs = history["outputs"]
    texts = {node: outputs[node]["text"][0] for node in ("23", "24") if "text" in outputs.get(node, {})}
    return read_latent(server.output_files(history, "latents")[0]), texts


def test_cached_graph_equals_the_host_graph_and_a_rerun_hits(wan_pack, server_files):
    host, _ = _run(wan_pack, _i2v_graph(server_files["first"], cached=False, clip_vision=True, prefix="host"))
    missed, miss_texts = _run(wan_pack, _i2v_graph(server_files["first"], cached=True, clip_vision=True,
                                                   prefix="miss"))
    hit, hit_texts = _run(wan_pack, _i2v_graph(server_files["first_again"], cached=True, clip_vision=True,
                                               prefix="hit"))
    print(f"\nfirst run: {miss_texts}\nsame pixels, other file: {hit_texts}")
    assert "cache miss" in miss_texts["23"] and "cache miss" in miss_texts["24"]
    assert "cache hit" in hit_texts["23"] and "cache hit" in hit_texts["24"]
    assert torch.isfinite(host).all()
    assert torch.equal(missed, host) and torch.equal(hit, host)


def test_a_changed_start_image_misses(wan_pack, server_files):
    first, _ = _run(wan_pack, _i2v_graph(server_files["first"], cached=True, clip_vision=False, prefix="first"))
    second, texts = _run(wan_pack, _i2v_graph(server_files["second"], cached=True, clip_vision=False,
                                              prefix="second"))
    print(f"\nchanged image: {texts}")
    assert "cache miss" in texts["24"]
    assert not torch.equal(first, second)
