"""Host tier: "Load Text Encoder (fp8)" and "Encode Prompt (cached)" against the real host.

Test files: the host always builds umt5-xxl at full size from ``CLIPLoader`` (5.7 G parameters); our loader
builds the host's umt5 with the shape found in the file, so ``tests/support/umt5_files.py`` writes a *complete*
width-4096 umt5 with 2 blocks, 8 heads x 16, d_ff 1024 and a 256-row vocabulary (61 MB in bf16): every
weight is present and random, an encode takes well under a second on CPU, and the Linear weights are 93% of
the parameters, so the memory ratio measures the fp8 storage itself. References are built with the host's
own classes and ``manual_cast`` operations from the same file (``umt5xxl_model_config`` set to the same
shape). The full-size umt5-xxl memory is measured by building both encoders on the meta device.

In-process tests drive the host objects (``tests/support/host_inprocess.py``); the graph tests go through
``POST /prompt`` on the session's server.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from wan_accel_kernels.fp8.umt5_file import inspect_umt5_file
from tests.support import graphs
from tests.support.comfy_server import ExecutionFailed, read_latent
from tests.support.host_inprocess import import_pack_module, loaded_entries
from tests.support.tiny_models import tiny_spiece_model_bytes, tiny_wan_i2v_state_dict
from tests.support.umt5_files import write_scaled_fp8_umt5, write_small_umt5

PROMPTS = ("a cat walks on the beach", "a red car on a bridge at night, cinematic",
           "close shot of a woman smiles in the rain", "low quality")
SMALL_BF16 = "umt5_small_bf16.safetensors"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("umt5_files")
    dit = folder / "wan_dit_not_a_te.safetensors"
    save_file(tiny_wan_i2v_state_dict(), str(dit))
    return {"bf16": write_small_umt5(folder / SMALL_BF16),
            "fp32": write_small_umt5(folder / "umt5_small_fp32.safetensors", dtype=torch.float32),
            "scaled_fp8": write_scaled_fp8_umt5(folder / "umt5_small_fp8_scaled.safetensors"),
            "no_tokenizer": write_small_umt5(folder / "umt5_no_tokenizer.safetensors", drop=("spiece_model",)),
            "dit": dit}


@pytest.fixture(scope="module")
def te():
    """The pack's text-encoder module, imported in-process with the host."""
    return import_pack_module("nodes.text_encoder_fp8")


def _host_clip(path: Path, dtype: torch.dtype):
    """The host's own umt5 (``manual_cast`` ops, ``dtype`` weights) with the file's shape, loaded from ``path``."""
    import comfy.sd
    import comfy.text_encoders.wan
    import comfy.utils

    state_dict = comfy.utils.load_torch_file(str(path), safe_load=True)
    tokenizer_data = {"spiece_model": state_dict.pop("spiece_model")}
    cpu = torch.device("cpu")
    target = SimpleNamespace(params={}, clip=comfy.text_encoders.wan.te(dtype_t5=dtype),
                             tokenizer=comfy.text_encoders.wan.WanT5Tokenizer)
    clip = comfy.sd.CLIP(target, tokenizer_data=tokenizer_data, parameters=0,
                         model_options={"dtype": dtype, "load_device": cpu, "offload_device": cpu,
                                        "umt5xxl_model_config": inspect_umt5_file(path).config})
    missing, _ = clip.load_sd(state_dict)
    assert missing == []
    return clip


def _encode(clip, text: str) -> torch.Tensor:
    """Token embeddings [tokens, 4096] of ``text``, no padding (T5TokenizerOptions min_length 0)."""
    clip = clip.clone()
    clip.set_tokenizer_option("umt5xxl_min_length", 0)
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0][0]


def _token_stats(outputs: list[torch.Tensor], references: list[torch.Tensor]) -> dict[str, float]:
    out, ref = torch.cat(outputs), torch.cat(references)
    cosine = torch.nn.functional.cosine_similarity(out, ref, dim=-1)
    relative = (out - ref).norm(dim=-1) / ref.norm(dim=-1)
    return {"tokens": len(cosine), "worst_cos": float(cosine.min()), "worst_token": int(cosine.argmin()),
            "mean_cos": float(cosine.mean()), "mean_rel": float(relative.mean())}


def test_fp8_encoder_matches_the_host_full_precision_encoder(te, files):
    reference = _host_clip(files["fp32"], torch.float32)
    bf16 = _host_clip(files["fp32"], torch.bfloat16)
    expected = [_encode(reference, p) for p in PROMPTS]
    results = {"host bf16 weights": _token_stats([_encode(bf16, p) for p in PROMPTS], expected)}
    for granularity in ("per_row", "per_tensor"):
        loaded = te.load_umt5_fp8(str(files["fp32"]), "cpu", granularity)
        results[f"fp8 {granularity} (ours)"] = _token_stats([_encode(loaded.clip, p) for p in PROMPTS], expected)
    print("\nsmall umt5 (2 blocks, width 4096), token embeddings vs the host's fp32 encoder:")
    for name, r in results.items():
        print(f"  {name:24s} {r['tokens']} tokens: worst cos {r['worst_cos']:.6f} (token {r['worst_token']}), "
              f"mean cos {r['mean_cos']:.6f}, mean rel err {r['mean_rel']:.5f}")
    ours = results["fp8 per_row (ours)"]
    assert ours["worst_cos"] >= 0.998 and ours["mean_cos"] >= 0.9985
    assert ours["mean_rel"] < 0.05
    assert results["host bf16 weights"]["mean_rel"] < ours["mean_rel"]


def test_resident_bytes_against_a_bf16_load_of_the_same_file(te, files):
    import comfy.model_management

    loaded = te.load_umt5_fp8(str(files["bf16"]), "cpu")
    host_bf16 = comfy.model_management.module_size(_host_clip(files["bf16"], torch.bfloat16).cond_stage_model)
    linear = [m for m in loaded.clip.cond_stage_model.modules() if hasattr(m, "weight_scale")]
    linear_bytes = sum(m.weight.nbytes + m.weight_scale.nbytes for m in linear)
    linear_bf16 = sum(m.weight.numel() * 2 for m in linear)
    ratio = loaded.resident_bytes / host_bf16
    print(f"\nsmall umt5 file: {loaded.resident_bytes / 2**20:.2f} MiB fp8 vs {host_bf16 / 2**20:.2f} MiB for the "
          f"host's bf16 load: ratio {ratio:.4f}; Linear weights alone {linear_bytes / linear_bf16:.4f}")
    full_fp8, full_bf16 = _full_size_bytes(te)
    print(f"full-size umt5-xxl (built on the meta device): {full_fp8 / 2**30:.3f} GiB vs {full_bf16 / 2**30:.3f} GiB "
          f"bf16: ratio {full_fp8 / full_bf16:.4f} (the 256384x4096 embedding table stays bf16)")
    print(f"node summary: {loaded.summary()}")
    assert abs(loaded.bf16_bytes - host_bf16) <= 4  # the host's bf16 load holds logit_scale as an fp32 scalar
    assert ratio <= 0.55 and abs(loaded.ratio - ratio) < 1e-3
    assert 0.50 < linear_bytes / linear_bf16 < 0.505  # + a 4-byte scale per output row
    assert 0.58 < full_fp8 / full_bf16 < 0.60


def _full_size_bytes(te) -> tuple[int, int]:
    """Bytes of the full umt5-xxl with our fp8 operations and with the host's bf16 ones (meta device)."""
    import comfy.model_management
    import comfy.sd
    import comfy.text_encoders.wan

    ops = import_pack_module("nodes.text_encoder_ops")
    spiece = torch.frombuffer(bytearray(tiny_spiece_model_bytes()), dtype=torch.uint8)
    sizes = []
    for operations in (ops.make_fp8_text_encoder_ops(torch.float8_e4m3fn, "per_row"), None):
        options = {"dtype": torch.bfloat16, "initial_device": torch.device("meta"),
                   "load_device": torch.device("cpu"), "offload_device": torch.device("cpu")}
        if operations is not None:
            options["custom_operations"] = operations
        target = SimpleNamespace(params={}, clip=comfy.text_encoders.wan.te(dtype_t5=torch.bfloat16),
                                 tokenizer=comfy.text_encoders.wan.WanT5Tokenizer)
        clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": spiece}, parameters=0, model_options=options)
        sizes.append(comfy.model_management.module_size(clip.cond_stage_model))
    return sizes[0], sizes[1]


def test_scaled_fp8_file_is_kept_byte_for_byte(te, files):
    from safetensors import safe_open

    loaded = te.load_umt5_fp8(str(files["scaled_fp8"]), "cpu")
    layer = loaded.clip.cond_stage_model.umt5xxl.transformer.encoder.block[1].layer[1].DenseReluDense.wo
    with safe_open(str(files["scaled_fp8"]), "pt") as handle:
        stored = handle.get_tensor("encoder.block.1.layer.1.DenseReluDense.wo.weight")
        scale = handle.get_tensor("encoder.block.1.layer.1.DenseReluDense.wo.scale_weight")
    assert torch.equal(layer.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(layer.weight_scale, scale.expand(4096))
    reference = _host_clip(files["fp32"], torch.float32)
    stats = _token_stats([_encode(loaded.clip, p) for p in PROMPTS], [_encode(reference, p) for p in PROMPTS])
    print(f"\nscaled fp8 file (per-tensor scales from the file) vs fp32: worst cos {stats['worst_cos']:.6f}, "
          f"mean rel err {stats['mean_rel']:.5f}")
    assert stats["worst_cos"] >= 0.998


def test_clip_lora_patches_apply_and_unpatch_exactly(te, files):
    loaded = te.load_umt5_fp8(str(files["fp32"]), "cpu")
    reference = _host_clip(files["fp32"], torch.float32)
    key = "umt5xxl.transformer.encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
    delta = 0.5 * torch.randn(1024, 4096, generator=torch.Generator().manual_seed(7)) / 64
    before = _encode(loaded.clip, PROMPTS[0])
    patched, patched_ref = loaded.clip.clone(), reference.clone()
    assert patched.add_patches({key: (delta,)}) == [key] and patched_ref.add_patches({key: (delta,)}) == [key]
    with_lora, with_lora_ref = _encode(patched, PROMPTS[0]), _encode(patched_ref, PROMPTS[0])
    unpatched_ref = _encode(reference, PROMPTS[0])
    effect = float((with_lora_ref - unpatched_ref).norm() / unpatched_ref.norm())
    error = float((with_lora - with_lora_ref).norm() / with_lora_ref.norm())
    print(f"\nCLIP patch moves the output by {effect:.4f}; fp8+patch vs fp32+patch: {error:.4f}")
    assert effect > 3 * error
    assert torch.equal(_encode(loaded.clip, PROMPTS[0]), before)


def test_device_option_and_host_model_management(te, files):
    import comfy.model_management

    cpu = te.load_umt5_fp8(str(files["bf16"]), "cpu")
    assert cpu.clip.patcher.load_device == torch.device("cpu") == cpu.clip.patcher.offload_device
    gpu = te.load_umt5_fp8(str(files["bf16"]), "gpu")
    assert gpu.clip.patcher.load_device == comfy.model_management.get_torch_device()
    assert gpu.clip.patcher.offload_device == comfy.model_management.text_encoder_offload_device()
    no_gpu = "; no GPU found: the text encoder loads and runs on the CPU"
    # asserted on every machine: the note is there exactly when "gpu" found none, never when "cpu" was asked for
    assert gpu.summary().endswith(no_gpu) == (gpu.load_device.type == "cpu")
    assert no_gpu not in cpu.summary()
    _encode(gpu.clip, PROMPTS[0])
    assert any(m.model is gpu.clip.patcher.model for m in comfy.model_management.loaded_models())


def test_bad_inputs_name_the_file_and_the_fix(te, files):
    error_type = import_pack_module("wan_accel_kernels.fp8.umt5_file").TextEncoderFileError
    with pytest.raises(error_type, match=r"wan_dit_not_a_te.safetensors is not a umt5/T5 text encoder: "
                                                   r"it holds a diffusion model \(DiT\)"):
        te.load_umt5_fp8(str(files["dit"]), "cpu")
    with pytest.raises(error_type, match=r"umt5_no_tokenizer.safetensors has no tokenizer"):
        te.load_umt5_fp8(str(files["no_tokenizer"]), "cpu")
    state_dict = load_file(str(files["bf16"]))
    state_dict["encoder.block.1.layer.0.SelfAttention.v.weight"][3, 5] = float("nan")
    damaged = files["bf16"].parent / "umt5_nan.safetensors"
    save_file(state_dict, str(damaged))
    with pytest.raises(error_type, match=r"umt5_nan.safetensors: encoder.block.1.layer.0.SelfAttention.v.weight: "
                                         r"the weight holds inf or NaN values.*download it again"):
        te.load_umt5_fp8(str(damaged), "cpu")


def test_fp8_unsupported_falls_back_to_16_bit_with_one_warning(te, files, monkeypatch, caplog):
    support = import_pack_module("wan_accel_kernels.fp8.support")

    def no_fp8(device: torch.device) -> None:
        raise RuntimeError("float8 is not implemented on this device")

    monkeypatch.setattr(support, "_probe", no_fp8)
    monkeypatch.setattr(te, "_fallbacks_reported", set())
    support._support.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="wan_accel"):
            first = te.load_umt5_fp8(str(files["bf16"]), "cpu")
            te.load_umt5_fp8(str(files["bf16"]), "cpu")
    finally:
        support._support.cache_clear()
    warnings = [r for r in caplog.records if "cannot store float8_e4m3fn" in r.getMessage()]
    layer = first.clip.cond_stage_model.umt5xxl.transformer.encoder.block[0].layer[0].SelfAttention.q
    print(f"\nfallback: {first.summary()}")
    assert len(warnings) == 1 and layer.weight.dtype == torch.bfloat16
    assert "fp8 unsupported" in first.summary() and 0.99 < first.ratio < 1.01


def _serve_small_encoder(files, tmp_path, monkeypatch) -> None:
    """The small bf16 umt5 in a ``text_encoders`` folder the host searches, and a private user directory (where the
    prompt cache lives)."""
    import folder_paths

    models = tmp_path / "text_encoders"
    models.mkdir()
    (models / SMALL_BF16).symlink_to(files["bf16"])
    folder_paths.add_model_folder_path("text_encoders", str(models), is_default=True)
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path / "user"))


def test_cached_encode_in_process_hit_skips_the_encoder(files, tmp_path, monkeypatch):
    import folder_paths

    cache = import_pack_module("nodes.prompt_cache_encode")
    _serve_small_encoder(files, tmp_path, monkeypatch)
    cache._kept.release()
    text = f"{PROMPTS[1]} {uuid.uuid4().hex[:6]}"
    miss = cache.encode_prompt_cached(SMALL_BF16, text, "cpu", min_length=512)
    miss_kept = cache.encode_prompt_cached(SMALL_BF16, text + " again", "cpu", min_length=512)

    def must_not_load(*args, **kwargs):
        raise AssertionError("the encoder was loaded on a cache hit")

    monkeypatch.setattr(cache, "load_umt5_fp8", must_not_load)
    cache._kept.release()
    hit = cache.encode_prompt_cached(SMALL_BF16, text, "cpu", min_length=512)
    print(f"\nmiss (load + encode, 512 tokens): {miss.seconds:.3f} s; miss with the kept encoder: "
          f"{miss_kept.seconds:.3f} s; hit: {hit.seconds * 1000:.1f} ms -> hit is "
          f"{miss_kept.seconds / hit.seconds:.0f}x faster than an encode\n  {miss.summary()}\n  {hit.summary()}")
    assert not miss.hit and hit.hit and "encoder not loaded" in hit.summary()
    assert torch.equal(hit.conditioning[0][0], miss.conditioning[0][0])
    assert hit.conditioning[0][0].shape == (1, 512, 4096)
    entries = list((tmp_path / "user" / "wan_accel" / "prompt_cache").glob("*.safetensors"))
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(b"broken")
    monkeypatch.undo()
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path / "user"))
    rewritten = cache.encode_prompt_cached(SMALL_BF16, text, "cpu", min_length=512)
    assert not rewritten.hit and torch.equal(rewritten.conditioning[0][0], miss.conditioning[0][0])
    assert cache.encode_prompt_cached(SMALL_BF16, text, "cpu", min_length=512).hit


def test_a_host_unload_releases_the_kept_encoder_and_hits_still_work(files, tmp_path, monkeypatch):
    import gc
    import weakref

    cache = import_pack_module("nodes.prompt_cache_encode")  # imports the host first
    import comfy.model_management

    _serve_small_encoder(files, tmp_path, monkeypatch)
    cache._kept.release()
    gc.collect()
    text = f"{PROMPTS[2]} {uuid.uuid4().hex[:6]}"
    miss = cache.encode_prompt_cached(SMALL_BF16, text, "cpu", min_length=0)
    kept = weakref.ref(cache._kept.value.clip.patcher.model)
    loaded_before = loaded_entries(kept())
    comfy.model_management.unload_all_models()  # what POST /free with unload_models does
    gc.collect()
    loaded_after = loaded_entries(kept())
    print(f"\nkept encoder in current_loaded_models: {loaded_before} before, {loaded_after} after the unload; "
          f"module alive after gc: {kept() is not None}")
    assert "encoder loaded in" in miss.summary() and loaded_before == 1
    assert cache._kept.value is None and kept() is None and loaded_after == 0
    hit = cache.encode_prompt_cached(SMALL_BF16, text, "cpu", min_length=0)
    again = cache.encode_prompt_cached(SMALL_BF16, text + " new", "cpu", min_length=0)
    assert hit.hit and torch.equal(hit.conditioning[0][0], miss.conditioning[0][0])
    assert not again.hit and "encoder loaded in" in again.summary()


# ----------------------------------------------------------------------------------------- graphs over HTTP

def _loader_graph(clip_name: str, prefix: str) -> dict:
    graph = graphs.tiny_i2v_graph(filename_prefix=f"latents/{prefix}")
    graph[graphs.NODE["clip"]] = {"class_type": "WanAccelLoadTextEncoderFP8",
                                  "inputs": {"clip_name": clip_name, "device": "gpu", "scaling": "per_row"}}
    return graph


def _cached_graph(clip_name: str, positive: str, prefix: str, negative: str = "low quality") -> dict:
    graph = graphs.tiny_i2v_graph(filename_prefix=f"latents/{prefix}")
    del graph[graphs.NODE["clip"]], graph[graphs.NODE["t5_options"]]
    for node, text in (("positive", positive), ("negative", negative)):
        graph[graphs.NODE[node]] = {"class_type": "WanAccelEncodePromptCached",
                                    "inputs": {"clip_name": clip_name, "text": text, "device": "gpu",
                                               "scaling": "per_row", "min_length": 0, "min_padding": 0,
                                               "cache_limit_mb": 64}}
    return graph


def _text(history: dict, node: str) -> str:
    return history["outputs"][graphs.NODE[node]]["text"][0]


def _seconds(summary: str) -> float:
    return float(re.search(r"\(([0-9.]+) s\)$", summary).group(1))


@pytest.fixture(scope="module")
def served(wan_pack, files) -> str:
    return wan_pack.add_model("text_encoders", files["bf16"], SMALL_BF16)


def test_loader_node_runs_a_real_graph(wan_pack, served):
    history = wan_pack.run(_loader_graph(served, "fp8_te"))
    latent = read_latent(wan_pack.output_files(history, "latents")[0])
    summary = _text(history, "clip")
    print(f"\nloader node: {summary}")
    ratio = float(re.search(r"ratio ([0-9.]+)", summary).group(1))
    assert latent.shape == graphs.latent_shape() and torch.isfinite(latent).all()
    assert "14 Linear weights BF16 -> fp8 e4m3fn, per_row scale" in summary and ratio <= 0.55


def test_cached_node_second_run_is_a_hit_and_gives_the_same_latent(wan_pack, served):
    loader_history = wan_pack.run(_loader_graph(served, "fp8_te_ref"))
    reference = read_latent(wan_pack.output_files(loader_history, "latents")[0])
    prompt_a, prompt_b = graphs.tiny_i2v_graph()["5"]["inputs"]["text"], f"a dog runs in the snow {uuid.uuid4().hex[:6]}"
    runs = []
    for index, prompt in enumerate((prompt_a, prompt_b, prompt_a)):
        started = time.monotonic()
        history = wan_pack.run(_cached_graph(served, prompt, f"cached_{index}"))
        runs.append((history, time.monotonic() - started,
                     read_latent(wan_pack.output_files(history, "latents")[0])))
    first, second, third = runs
    texts = [_text(h, "positive") for h, _, _ in runs]
    print("\n" + "\n".join(f"run {i + 1} ({seconds:.1f} s): {text}" for i, (text, (_, seconds, _)) in
                           enumerate(zip(texts, runs))))
    first_run = texts[0] + _text(first[0], "negative")
    assert first_run.count("cache miss") == 2 and first_run.count("encoder loaded in") == 1
    assert texts[1].startswith("cache miss") and "kept encoder reused" in texts[1]
    assert texts[2].startswith("cache hit") and "encoder not loaded" in texts[2]
    assert torch.equal(first[2], third[2]) and torch.equal(first[2], reference)
    assert not torch.equal(first[2], second[2])
    log = wan_pack.log_text()
    assert "prompt cache hit for 'a cat walks on the beach'" in log
    print(f"hit {_seconds(texts[2]) * 1000:.1f} ms vs miss with the kept encoder {_seconds(texts[1]):.3f} s")
    assert _seconds(texts[2]) < _seconds(texts[1])
    cache_dir = wan_pack.base_dir / "user" / "wan_accel" / "prompt_cache"
    assert len(list(cache_dir.glob("*.safetensors"))) >= 3


def test_a_non_t5_file_fails_the_node_with_a_clear_message(wan_pack, files):
    name = wan_pack.add_model("text_encoders", files["dit"], "wan_dit_not_a_te.safetensors")
    with pytest.raises(ExecutionFailed) as failure:
        wan_pack.run(_loader_graph(name, "bad_te"))
    message = failure.value.details.get("exception_message", "")
    print(f"\nnode error: {message}")
    assert "wan_dit_not_a_te.safetensors is not a umt5/T5 text encoder: it holds a diffusion model (DiT)" in message



def _wait_for_log(server, text: str, count: int, timeout: float = 30.0) -> None:
    """Waits until ``text`` is in the server log ``count`` times (the host handles POST /free between prompts)."""
    deadline = time.monotonic() + timeout
    while server.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"the server never logged {text!r}:\n{server.log_tail()}"
        time.sleep(0.2)


def test_post_free_releases_the_kept_encoder_and_the_next_run_hits(wan_pack, served):
    prompt = f"a boat on a lake {uuid.uuid4().hex[:6]}"
    first = wan_pack.run(_cached_graph(served, prompt, "free_first"))
    released = wan_pack.log_text().count("the host unloaded the kept text encoder")
    wan_pack._request("POST", "/free", {"unload_models": True, "free_memory": True})
    _wait_for_log(wan_pack, "the host unloaded the kept text encoder", released + 1)
    hit = wan_pack.run(_cached_graph(served, prompt, "free_hit"))
    miss = wan_pack.run(_cached_graph(served, prompt + " again", "free_miss"))
    texts = [_text(h, "positive") for h in (first, hit, miss)]
    print("\n" + "\n".join(texts))
    assert wan_pack.log_text().count("the host unloaded the kept text encoder") == released + 1
    assert texts[1].startswith("cache hit") and "encoder not loaded" in texts[1]
    assert texts[2].startswith("cache miss") and "encoder loaded in" in texts[2]
    assert torch.equal(read_latent(wan_pack.output_files(first, "latents")[0]),
                       read_latent(wan_pack.output_files(hit, "latents")[0]))
