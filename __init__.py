"""wan-accel: ComfyUI nodes that make Wan 2.1 14B image-to-video fast on one 24 GB GPU."""
from .nodes.extension import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
