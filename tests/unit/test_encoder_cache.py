"""wan_accel_kernels.encoder_cache: digests see every byte, keys separate what changes the output, fields round-trip exactly."""
from __future__ import annotations

import os

import pytest
import torch

from wan_accel_kernels.encoder_cache import encoder_key, pack_fields, tensor_digest, unpack_fields, weights_digest
from wan_accel_kernels.prompt_cache import CorruptEntry, PromptCacheStore


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(seed))


def test_a_one_ulp_change_of_one_pixel_changes_the_digest():
    image = _image()
    changed = image.clone()
    changed[0, 10, 20, 1] = torch.nextafter(changed[0, 10, 20, 1], torch.tensor(2.0))
    assert tensor_digest(image) == tensor_digest(image.clone())
    assert tensor_digest(image) != tensor_digest(changed)
    assert tensor_digest(image) != tensor_digest(image.double())                 # dtype is part of it
    assert tensor_digest(image) != tensor_digest(image.reshape(1, 64, 48, 3))    # and the shape
    assert tensor_digest(image.to(torch.bfloat16)) == tensor_digest(image.to(torch.bfloat16).clone())


def test_weights_digest_follows_names_and_values():
    weights = {"a.weight": torch.ones(3, 3), "b.bias": torch.zeros(3)}
    renamed = {"a.weight": torch.ones(3, 3), "c.bias": torch.zeros(3)}
    changed = {"a.weight": torch.ones(3, 3), "b.bias": torch.tensor([0.0, 0.0, 1e-30])}
    assert weights_digest(weights.items()) == weights_digest(dict(weights).items())
    assert weights_digest(weights.items()) != weights_digest(renamed.items())
    assert weights_digest(weights.items()) != weights_digest(changed.items())


def test_keys_differ_for_every_input_and_identity_field():
    inputs = {"start_image": tensor_digest(_image()), "width": 832, "height": 480, "length": 81}
    encoder = {"weights": "ab" * 32, "dtype": "torch.float16", "device": "cpu"}
    key = encoder_key("wan_i2v_concat_latent", inputs, encoder)
    assert len(key) == 64 and key == encoder_key("wan_i2v_concat_latent", dict(inputs), dict(encoder))
    variants = [encoder_key("clip_vision_output", inputs, encoder),
                encoder_key("wan_i2v_concat_latent", {**inputs, "length": 77}, encoder),
                encoder_key("wan_i2v_concat_latent", {**inputs, "start_image": tensor_digest(_image(1))}, encoder),
                encoder_key("wan_i2v_concat_latent", inputs, {**encoder, "dtype": "torch.bfloat16"})]
    assert len({key, *variants}) == 5


def test_fields_round_trip_bit_exact_through_the_store(tmp_path):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    fields = {"last_hidden_state": torch.randn(1, 5, 8), "image_embeds": torch.randn(1, 4).to(torch.bfloat16),
              "mm_projected": None}
    key = encoder_key("clip_vision_output", {"image": tensor_digest(_image())}, {"name": "x"})
    store.put(key, *pack_fields(fields))
    entry = store.get(key)
    restored = unpack_fields(entry.tensors, entry.metadata)
    assert restored.keys() == fields.keys() and restored["mm_projected"] is None
    for name in ("last_hidden_state", "image_embeds"):
        assert restored[name].dtype == fields[name].dtype
        assert torch.equal(restored[name], fields[name])


def test_the_newer_hosts_non_tensor_fields_round_trip_with_their_types(tmp_path):
    """ComfyUI 0.33's CLIP-vision output adds ``image_sizes`` (a list of torch.Size); plain data comes back as is."""
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    fields = {"image_embeds": torch.randn(2, 4), "image_sizes": [torch.Size([3, 224, 224])] * 2,
              "crop": "center", "scales": [1, 2.5], "mm_projected": None}
    key = encoder_key("clip_vision_output", {"image": tensor_digest(_image())}, {"name": "x"})
    store.put(key, *pack_fields(fields))
    entry = store.get(key)
    restored = unpack_fields(entry.tensors, entry.metadata)
    assert restored["image_sizes"] == fields["image_sizes"]
    assert all(type(size) is torch.Size for size in restored["image_sizes"])
    assert restored["crop"] == "center" and restored["scales"] == [1, 2.5] and restored["mm_projected"] is None
    assert torch.equal(restored["image_embeds"], fields["image_embeds"])
    assert set(entry.tensors) == {"image_embeds"}


def test_a_truncated_entry_is_a_miss_and_is_deleted(tmp_path):
    store = PromptCacheStore(tmp_path, max_bytes=1 << 20)
    key = encoder_key("clip_vision_output", {"image": "0"}, {"name": "x"})
    path = store.put(key, *pack_fields({"latent": torch.randn(4, 4)}))
    path.write_bytes(path.read_bytes()[:40])
    assert store.get(key) is None
    assert not path.exists()


def test_an_entry_of_another_layout_is_reported_corrupt(tmp_path):
    with pytest.raises(CorruptEntry, match="not an encoder cache entry"):
        unpack_fields({"cond.0": torch.zeros(1)}, {"wan_accel_conditioning": "[]"})
    with pytest.raises(CorruptEntry, match="not an encoder cache entry"):
        unpack_fields({}, {"wan_accel_encoder_fields": '{"latent": true}'})
    with pytest.raises(TypeError, match="'latent' is a object"):
        pack_fields({"latent": object()})


def test_the_size_limit_evicts_the_least_recently_used_entry(tmp_path):
    entry_bytes = len(PromptCacheStore(tmp_path / "probe", 1 << 20).put("0" * 64, *pack_fields(
        {"latent": torch.zeros(256)})).read_bytes())
    store = PromptCacheStore(tmp_path / "cache", max_bytes=2 * entry_bytes + 10)
    keys = [encoder_key("wan_i2v_concat_latent", {"i": i}, {}) for i in range(3)]
    for key in keys[:2]:
        store.put(key, *pack_fields({"latent": torch.zeros(256)}))
    os.utime(store.path_of(keys[0]), ns=(1, 1))        # make key 0 the oldest
    os.utime(store.path_of(keys[1]), ns=(2, 2))
    assert store.get(keys[0]) is not None                # a read makes it the most recent
    store.put(keys[2], *pack_fields({"latent": torch.zeros(256)}))
    assert store.get(keys[1]) is None and store.get(keys[0]) is not None and store.get(keys[2]) is not None
    assert store.total_bytes() <= store.max_bytes
