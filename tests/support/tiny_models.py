"""Tiny, random-weight model files that the real ComfyUI host loads.

Everything here is written from scratch for the tests; nothing imports ``comfy``. The layouts follow
what the host (v0.3.64) expects:

* :func:`tiny_wan_i2v_state_dict` - a Wan 2.1 image-to-video DiT in the host's own key layout
  (``comfy/ldm/wan/model.py`` ``WanModel``, unprefixed keys as in the released
  ``wan2.1_i2v_*.safetensors`` files). ``comfy/model_detection.py`` detects it as ``WAN21_I2V``:
  ``head.modulation`` [1, 2, dim] with ``dim`` a multiple of 128 (``num_heads = dim // 128``),
  ``img_emb.proj.0.bias`` present and ``in_dim == 36`` (16 noise + 4 mask + 16 image channels).
  The text width (4096) and CLIP-vision width (1280) are fixed by the host. dim 128, 2 layers,
  ffn 256 in fp32 is about 3.0 M parameters (12 MB), most of it the fixed-width embeddings.
* :func:`tiny_wan_lora_state_dict` - a LoRA for that DiT in the "generic" key format of
  ``comfy/lora.py``: ``diffusion_model.<module>.lora_up.weight`` / ``.lora_down.weight`` /
  ``.alpha`` (scale ``alpha / rank``), which ``LoraLoaderModelOnly`` applies.
* :func:`write_umt5_stub` - a minimal umt5-xxl text-encoder file for ``CLIPLoader`` type ``wan``.
* :func:`write_random_image` - a deterministic random PNG.

Not provided on purpose (too big for a test fixture; the host always builds them from fixed
full-size configs): a random CLIP-vision ViT-H file is about 1.26 GB in fp16 and a random Wan 2.1
VAE about 254 MB in fp16 (measured, see ``/work/shared/host/NOTES.md``).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Mapping

import torch
from safetensors.torch import save_file

__all__ = [
    "TEXT_DIM",
    "CLIP_VISION_DIM",
    "FREQ_DIM",
    "I2V_IN_DIM",
    "LATENT_CHANNELS",
    "UMT5_BLOCKS",
    "tiny_wan_i2v_state_dict",
    "write_tiny_wan_i2v",
    "tiny_wan_lora_state_dict",
    "write_tiny_wan_lora",
    "umt5_stub_state_dict",
    "write_umt5_stub",
    "tiny_spiece_model_bytes",
    "write_random_image",
]

TEXT_DIM = 4096          # umt5-xxl width; fixed by the host's WanModel config
CLIP_VISION_DIM = 1280   # ViT-H penultimate width; fixed by the host's MLPProj
FREQ_DIM = 256           # sinusoidal time-embedding width; fixed by model_detection
I2V_IN_DIM = 36          # 16 latent + 4 mask + 16 image-latent channels
LATENT_CHANNELS = 16     # Wan 2.1 VAE latent channels
UMT5_BLOCKS = 24         # umt5-xxl encoder depth (comfy/text_encoders/umt5_config_xxl.json)
UMT5_HEADS = 64
UMT5_BUCKETS = 32
UMT5_D_FF = 10240


def _linear(sd: dict, gen: torch.Generator, name: str, out_f: int, in_f: int, *,
            gain: float = 1.0, bias_std: float = 0.02) -> None:
    """Linear weight with std ``gain / sqrt(in_f)`` (activations stay O(1)) and a small bias."""
    sd[f"{name}.weight"] = torch.randn(out_f, in_f, generator=gen) * (gain / in_f ** 0.5)
    sd[f"{name}.bias"] = torch.randn(out_f, generator=gen) * bias_std


def _norm_weight(gen: torch.Generator, n: int) -> torch.Tensor:
    """An affine norm scale around 1."""
    return 1.0 + 0.05 * torch.randn(n, generator=gen)


def tiny_wan_i2v_state_dict(seed: int = 0, dim: int = 128, layers: int = 2,
                            ffn: int = 256) -> dict[str, torch.Tensor]:
    """Random-weight Wan 2.1 I2V DiT state dict (fp32) in the host's key layout.

    Weights are scaled so that every linear keeps activations O(1) (std ``1/sqrt(fan_in)``),
    norm scales are ~1 and modulations ~0.1, so a forward is finite and the predicted velocity is
    of order 1: a 4-step sampler output depends clearly on the weights (and on a LoRA).
    """
    if dim % 128 != 0 or dim <= 0:
        raise ValueError(f"dim must be a positive multiple of 128 (the host uses dim // 128 heads), got {dim}")
    if layers < 1 or ffn < 1:
        raise ValueError("layers and ffn must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    fan_in = I2V_IN_DIM * 1 * 2 * 2
    sd["patch_embedding.weight"] = torch.randn(dim, I2V_IN_DIM, 1, 2, 2, generator=gen) / fan_in ** 0.5
    sd["patch_embedding.bias"] = torch.randn(dim, generator=gen) * 0.02

    _linear(sd, gen, "text_embedding.0", dim, TEXT_DIM)
    _linear(sd, gen, "text_embedding.2", dim, dim)
    _linear(sd, gen, "time_embedding.0", dim, FREQ_DIM)
    _linear(sd, gen, "time_embedding.2", dim, dim)
    _linear(sd, gen, "time_projection.1", dim * 6, dim, gain=0.1)

    for i in range(layers):
        b = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for p in ("q", "k", "v", "o"):
                _linear(sd, gen, f"{b}.{attn}.{p}", dim, dim)
            sd[f"{b}.{attn}.norm_q.weight"] = _norm_weight(gen, dim)
            sd[f"{b}.{attn}.norm_k.weight"] = _norm_weight(gen, dim)
        _linear(sd, gen, f"{b}.cross_attn.k_img", dim, dim)
        _linear(sd, gen, f"{b}.cross_attn.v_img", dim, dim)
        sd[f"{b}.cross_attn.norm_k_img.weight"] = _norm_weight(gen, dim)
        sd[f"{b}.norm3.weight"] = _norm_weight(gen, dim)
        sd[f"{b}.norm3.bias"] = torch.randn(dim, generator=gen) * 0.02
        _linear(sd, gen, f"{b}.ffn.0", ffn, dim)
        _linear(sd, gen, f"{b}.ffn.2", dim, ffn)
        sd[f"{b}.modulation"] = torch.randn(1, 6, dim, generator=gen) * 0.1

    _linear(sd, gen, "head.head", LATENT_CHANNELS * 1 * 2 * 2, dim)
    sd["head.modulation"] = torch.randn(1, 2, dim, generator=gen) * 0.1

    sd["img_emb.proj.0.weight"] = _norm_weight(gen, CLIP_VISION_DIM)
    sd["img_emb.proj.0.bias"] = torch.randn(CLIP_VISION_DIM, generator=gen) * 0.02
    _linear(sd, gen, "img_emb.proj.1", CLIP_VISION_DIM, CLIP_VISION_DIM)
    _linear(sd, gen, "img_emb.proj.3", dim, CLIP_VISION_DIM)
    sd["img_emb.proj.4.weight"] = _norm_weight(gen, dim)
    sd["img_emb.proj.4.bias"] = torch.randn(dim, generator=gen) * 0.02

    return {k: v.to(torch.float32).contiguous() for k, v in sd.items()}


def write_tiny_wan_i2v(path: str | os.PathLike, **kw) -> Path:
    """Write :func:`tiny_wan_i2v_state_dict` (``**kw`` forwarded) as safetensors; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tiny_wan_i2v_state_dict(**kw), str(path))
    return path


#: Linear layers of every block that :func:`tiny_wan_lora_state_dict` adapts by default.
DEFAULT_LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                        "cross_attn.o", "ffn.0", "ffn.2")


def tiny_wan_lora_state_dict(base_sd: Mapping[str, torch.Tensor], rank: int = 4, seed: int = 1,
                             targets: tuple[str, ...] = DEFAULT_LORA_TARGETS,
                             scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A LoRA for a DiT made by :func:`tiny_wan_i2v_state_dict`, in the host's generic format.

    Keys: ``diffusion_model.blocks.N.<target>.lora_up.weight`` [out, rank],
    ``.lora_down.weight`` [rank, in] and ``.alpha`` (= rank, so the host's scale
    ``alpha / rank`` is 1). ``up @ down`` has roughly the same std as the base weight times
    ``scale``, so strength 1.0 changes the sampler output clearly.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks = sorted({int(k.split(".")[1]) for k in base_sd if k.startswith("blocks.")})
    out: dict[str, torch.Tensor] = {}
    for i in blocks:
        for t in targets:
            w = base_sd[f"blocks.{i}.{t}.weight"]
            out_f, in_f = w.shape
            # std(up @ down) = std_up * std_down * sqrt(rank) = scale / sqrt(in_f)
            up = torch.randn(out_f, rank, generator=gen) * (scale / rank ** 0.5)
            down = torch.randn(rank, in_f, generator=gen) / in_f ** 0.5
            key = f"diffusion_model.blocks.{i}.{t}"
            out[f"{key}.lora_up.weight"] = up.contiguous()
            out[f"{key}.lora_down.weight"] = down.contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(rank))
    return out


def write_tiny_wan_lora(path: str | os.PathLike, base_sd: Mapping[str, torch.Tensor] | None = None,
                        **kw) -> Path:
    """Write :func:`tiny_wan_lora_state_dict` as safetensors (base: the default tiny DiT)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if base_sd is None:
        base_sd = tiny_wan_i2v_state_dict()
    save_file(tiny_wan_lora_state_dict(base_sd, **kw), str(path))
    return path


_WORDS = ("a cat dog bird horse woman man child girl boy walks runs jumps flies swims sits stands "
          "looks turns smiles on in under over near the beach forest city street river mountain "
          "field room garden sky sea snow rain sun light night day morning evening slowly quickly "
          "gently camera pans zooms tracks close wide shot view portrait landscape red blue green "
          "yellow white black golden soft bright dark warm cold wind water fire tree flower house "
          "car train boat road bridge window door table chair cinematic realistic detailed video "
          "frame motion blur still static low quality worst ugly deformed").split()


def tiny_spiece_model_bytes(vocab_size: int = 200, seed: int = 0) -> bytes:
    """Train a tiny SentencePiece (unigram) model in-process and return its serialized proto.

    Special ids follow umt5: pad 0, eos 1, unk 2, no bos (the host's ``UMT5XXlModel`` uses
    ``end=1, pad=0``). Training on ~600 generated lines takes well under a second.
    """
    import random

    import sentencepiece as spm  # only needed here

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))) for _ in range(600)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2,
    )
    return buf.getvalue()


def umt5_stub_state_dict(vocab_size: int = 200, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of :func:`write_umt5_stub` (see there for why each one is there)."""
    sd: dict[str, torch.Tensor] = {}
    spiece = tiny_spiece_model_bytes(vocab_size=vocab_size, seed=seed)
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8).clone()
    # Detection key (comfy/sd.py detect_te_model): its last dim must be 4096 and load_state_dict
    # needs the full [10240, 4096] shape. float8 is the smallest dtype safetensors stores (42 MB);
    # the host copies it into its fp32 parameter.
    sd["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] = torch.zeros(
        UMT5_D_FF, TEXT_DIM, dtype=torch.float8_e4m3fn)
    # Small tensors the host would otherwise leave uninitialised on the heap (garbage, maybe NaN):
    # every norm scale and every per-layer relative-attention bias of umt5.
    dt = torch.float32
    for i in range(UMT5_BLOCKS):
        sd[f"encoder.block.{i}.layer.0.layer_norm.weight"] = torch.ones(TEXT_DIM, dtype=dt)
        sd[f"encoder.block.{i}.layer.1.layer_norm.weight"] = torch.ones(TEXT_DIM, dtype=dt)
        sd[f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"] = torch.zeros(
            UMT5_BUCKETS, UMT5_HEADS, dtype=dt)
    # Its dtype is the compute/storage dtype the host picks for the whole encoder (t5_xxl_detect).
    sd["encoder.final_layer_norm.weight"] = torch.ones(TEXT_DIM, dtype=dt)
    return sd


def write_umt5_stub(path: str | os.PathLike, vocab_size: int = 200, seed: int = 0) -> Path:
    """Write a minimal umt5-xxl file (about 43 MB) that ``CLIPLoader`` (type ``wan``) accepts.

    Contents: a real ``spiece_model`` (a SentencePiece model trained in-process on generated text:
    at most ``vocab_size`` pieces, 128 with the default corpus; umt5 special ids; the host never
    needs the real 256384-piece vocabulary: its embedding table keeps its full size and our ids are
    all small), the detection key
    ``encoder.block.23.layer.1.DenseReluDense.wi_1.weight`` (zeros, float8), and every small
    tensor (norm scales = 1, relative-attention biases = 0, fp32). All big weights are absent: the
    host builds the full 5.7 G-parameter encoder with ``torch.empty`` and only warns
    ("clip missing"). Those big tensors are fresh anonymous mmaps, i.e. zero pages: the encode
    output is exactly 0 for every prompt (finite; the DiT's ``text_embedding`` biases still give
    it a non-zero context), and resident memory stays around 1 GB.

    Speed, measured on this project's 2-core CPU (AVX-512, no bf16 units), host v0.3.64:

    * the fp32 ``encoder.final_layer_norm.weight`` makes the host keep the encoder in fp32, so its
      ``manual_cast`` ops do no per-layer weight casts. A bf16 stub costs ~26 s per encode even
      for 3 tokens, because every encode casts 11 GB of bf16 weights to fp32;
    * the host pads every prompt to 512 tokens (``UMT5XXlTokenizer`` ``min_length=512``): with it
      one encode takes ~60 s in fp32 (NOTES.md: ~40 s in bf16). The core node ``T5TokenizerOptions``
      (``min_padding=0, min_length=0``) drops the padding, so only the prompt's tokens + EOS run;
      ``tests/support/graphs.py`` inserts it by default;
    * result, in-process: the first encode of a fresh process takes ~7-8 s (faulting in 23 GB of
      zero pages of the virtual fp32 weights), every later one ~1.5 s (streaming those weights
      once per encode). In a running host server: the first tiny I2V prompt (CLIP load, two
      encodes, DiT load, 4 steps) takes ~15 s, a prompt whose text changed ~3.5 s per changed
      prompt, one where only the seed changed ~0.5 s (the host caches the encodes);
    * ``THP_MEM_ALLOC_ENABLE=1`` in the host's environment (transparent huge pages) saves ~2.5 s on
      the first encode and costs ~0.5 s on later ones; not used.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(umt5_stub_state_dict(vocab_size=vocab_size, seed=seed), str(path))
    return path


def write_random_image(path: str | os.PathLike, width: int, height: int, seed: int = 0) -> Path:
    """Write a deterministic random RGB PNG (smooth gradient plus noise) of ``width`` x ``height``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1),
                     0.5 + 0.5 * np.sin((xx + yy) / 7.0 + seed)], axis=-1) * 200.0
    img = np.clip(base + rng.normal(0.0, 25.0, size=base.shape), 0, 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="PNG")
    return path
