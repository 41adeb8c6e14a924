"""Command-line tools of wan-accel: the GGUF converter and the ComfyUI API client."""
