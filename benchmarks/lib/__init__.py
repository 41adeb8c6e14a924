"""Helpers the benchmark scripts and the GPU suite share: timing, datasheet peaks and the 4090 projection,
random-weight Wan 14B models and their rows, the Wan 2.2 expert sizes, synthetic inputs and metric weights."""
