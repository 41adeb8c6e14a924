"""The GPU suite (``python -m benchmarks.gpu_suite``): its command, budgeted runner, shared context, in-process host
import and one module per section."""
