"""Thin ComfyUI nodes of the pack; the numerics live in ``wan_accel_kernels/``."""
