"""Speed and memory measurements of the pack, run from the repository root as ``python -m benchmarks.<name>``:
topic scripts here, the GPU suite's sections in ``suite/``, shared helpers in ``lib/``. Never imported at run time."""
