"""Pure PyTorch numerics of wan-accel. Never imports ``comfy``: usable and testable without ComfyUI."""
