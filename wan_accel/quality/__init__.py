"""The ACM MM 2025 I2V challenge's quality score, computed client side the way VBench computes it.

Optional: ``pip install wan-accel[score]``. Nothing here is imported by the ComfyUI nodes, so scoring never competes
with generation for the server's VRAM. :mod:`.formulas` holds the pure arithmetic, one module per metric holds its
network, :mod:`.features` the steps those networks share, :mod:`.weights` where each network's file comes from.
"""
