"""Thin ComfyUI nodes of the pack; the numerics live in ``kernels/``."""
