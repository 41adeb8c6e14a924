"""The GGUF dequantisation operator: a GGUF-weight module compiles with no graph break, on either path.

On CPU the torch path runs for real (Dynamo, then AOT autograd's decomposition of the ``triton_op`` body). The Triton
path, which needs CUDA to run, is traced in a subprocess without ``TRITON_INTERPRET``: its graphs are evaluated on fake
tensors only, so the count of graphs and breaks is what a CUDA run would trace, without launching a kernel.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_accel_kernels.gguf import backend, dequantize, quantize
from wan_accel_kernels.gguf.custom_op import gguf_dequantize

Q6_K, Q8_0 = 14, 8


class Q6KLinear(torch.nn.Module):
    """A bias-free Linear whose weight is held as raw Q6_K blocks and dequantised in every forward."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("raw", quantize(weight, Q6_K))
        self.shape = tuple(weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, backend.dequantize_on_device(self.raw, Q6_K, self.shape, x.dtype))


def q6_k_stack(layers: int = 4, width: int = 256) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[Q6KLinear(torch.randn(width, width) * 0.02) for _ in range(layers)])


@pytest.fixture(autouse=True)
def _auto_path(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_a_q6_k_linear_stack_compiles_to_one_graph_on_cpu():
    model, x = q6_k_stack(), torch.randn(8, 256, dtype=torch.bfloat16)
    explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    assert explained.graphs[0].code.count("wan_accel.gguf_dequantize") == 4  # one operator node per weight
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # decomposes the triton_op body
    assert torch.equal(compiled(x), model(x))


def test_the_operator_passes_opcheck_and_equals_the_torch_decode():
    raw = quantize(torch.randn(4, 256), Q8_0)
    out = gguf_dequantize(raw, Q8_0, [4, 256], torch.bfloat16, False)
    assert torch.equal(out, dequantize(raw, Q8_0, (4, 256), torch.bfloat16))
    torch.library.opcheck(gguf_dequantize, (raw, Q8_0, [4, 256], torch.bfloat16, False))
    with torch._subclasses.FakeTensorMode() as mode:  # the fake implementation: shape and dtype, no values
        meta = gguf_dequantize(mode.from_tensor(raw), Q8_0, [4, 256], torch.float16, False)
    assert (tuple(meta.shape), meta.dtype) == ((4, 256), torch.float16)


def test_float_types_bypass_the_operator_and_may_return_a_view():
    data = torch.randn(2, 8, dtype=torch.float16)
    out = backend.dequantize_on_device(data.view(torch.uint8), 1, (2, 8), torch.float16)
    assert torch.equal(out, data) and out.data_ptr() == data.data_ptr()


TRITON_ROUTE_SCRIPT = """
import json, re, sys
sys.path.insert(0, sys.argv[1])
import torch
from torch._dynamo.utils import counters
from torch._subclasses.fake_tensor import FakeTensorMode
from wan_accel_kernels.gguf import backend
from wan_accel_kernels.gguf.custom_op import triton_kernels
sys.path.insert(0, sys.argv[2])
from test_gguf_custom_op import q6_k_stack

assert not triton_kernels().interpreting()
backend.choose_path_on = lambda device, qtype, dtype, failures=None: ("triton", "as on CUDA")
graphs = []

def fake_only(gm, example_inputs):  # evaluates each graph on fake tensors: no Triton kernel is launched
    graphs.append(gm.code)
    def run(*args):
        with FakeTensorMode(allow_non_fake_inputs=True):
            outs = gm(*args)
        return [torch.zeros(o.shape, dtype=o.dtype) for o in outs]
    return run

counters.clear()
out = torch.compile(q6_k_stack(), backend=fake_only)(torch.randn(8, 256, dtype=torch.bfloat16))
calls = [args for code in graphs for args in re.findall(r"wan_accel\\.gguf_dequantize\\.default\\((.*?)\\);", code)]
print(json.dumps({"graphs": len(graphs), "breaks": sum(counters["graph_break"].values()), "op_calls": len(calls),
                  "use_triton": all(args.endswith(", True") for args in calls), "shape": list(out.shape)}))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (pip install triton)")
def test_the_triton_route_traces_to_one_graph_without_breaks():
    # The code before this operator broke the graph once per linear on this route (4 here, ~400 per Wan 14B forward).
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", backend.ENV_VAR)}
    here = Path(__file__).resolve()
    result = subprocess.run([sys.executable, "-c", TRITON_ROUTE_SCRIPT, str(here.parents[2]), str(here.parent)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert found == {"graphs": 1, "breaks": 0, "op_calls": 4, "use_triton": True, "shape": [8, 256]}
