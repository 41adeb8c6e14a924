"""StepCacheRun with a fake DiT: skip = input + cached output delta, per-stream state, shape-change reset, stats."""
from __future__ import annotations

import pytest
import torch

from wan_accel_kernels.step_cache import MagCachePolicy, StepCacheRun, StepGate, TeaCachePolicy

STEPS = 8
FORCED_ENDS = StepGate(first_steps=1, last_steps=1, max_consecutive_skips=100)


class FakeDiT:
    """A deterministic stand-in for the Wan DiT: 36 input channels (16 noisy latent first), 16 output channels."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(x[:, :16] * (1.0 + 0.1 * step) + x[:, 16:32])


def latent(step: int, batch: int = 1, size: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    return torch.randn(batch, 36, 2, size, size, generator=generator)


def run_steps(run: StepCacheRun, dit: FakeDiT, streams, *, size: int = 4, steps: int = STEPS) -> list[torch.Tensor]:
    outputs = []
    for step in range(steps):
        x = latent(step, len(streams), size)
        indicator = torch.full((len(streams), 3), 1.0 + step)
        outputs.append(run.forward(x, streams, step, steps, lambda: dit(x, step), lambda: indicator))
    return outputs


def test_threshold_zero_computes_every_forward_and_matches_the_model():
    dit = FakeDiT()
    run = StepCacheRun(MagCachePolicy((1.0,) * STEPS, (1.0,) * STEPS, 0.0, gate=FORCED_ENDS))
    outputs = run_steps(run, dit, [(0, "c")])
    assert dit.calls == STEPS
    for step, out in enumerate(outputs):
        assert torch.equal(out, FakeDiT()(latent(step), step))
    assert (run.stats.steps_computed, run.stats.steps_skipped) == (8, 0)


def test_a_skipped_forward_returns_input_plus_the_cached_output_delta():
    dit = FakeDiT()
    run = StepCacheRun(MagCachePolicy((1.0,) * STEPS, (1.0,) * STEPS, 1e9, gate=FORCED_ENDS))
    outputs = run_steps(run, dit, [(0, "c")])
    assert dit.calls == 2
    delta = FakeDiT()(latent(0), 0) - latent(0)[:, :16]
    for step in range(1, 7):
        assert torch.equal(outputs[step], latent(step)[:, :16] + delta)
    assert run.stats.summary().startswith("MagCache: computed 2/8 steps, skipped 6 (DiT forwards 2 run, 6 reused")


def test_cond_and_uncond_keep_their_own_delta_and_skip_only_together():
    dit = FakeDiT()
    # cond wants to skip every step, uncond only where its drift allows (ratios 0.5 -> never after step 0).
    run = StepCacheRun(MagCachePolicy((1.0,) * STEPS, (1.0,) + (0.5,) * 7, 0.3, 0.0, FORCED_ENDS))
    run_steps(run, dit, [(0, "c"), (1, "u")])
    assert dit.calls == STEPS
    run = StepCacheRun(MagCachePolicy((1.0,) * STEPS, (1.0,) * STEPS, 1e9, 0.0, FORCED_ENDS))
    outputs = run_steps(run, dit, [(0, "c"), (1, "u")])
    first = latent(0, 2)
    delta = FakeDiT()(first, 0) - first[:, :16]
    assert not torch.equal(delta[0], delta[1])
    assert torch.equal(outputs[3], latent(3, 2)[:, :16] + delta)


def test_a_shape_change_resets_the_state_instead_of_failing():
    dit = FakeDiT()
    run = StepCacheRun(MagCachePolicy((1.0,) * STEPS, (1.0,) * STEPS, 1e9, gate=FORCED_ENDS))
    run_steps(run, dit, [(0, "c")], steps=4)
    calls = dit.calls
    x = latent(2, size=6)
    out = run.forward(x, [(0, "c")], 2, STEPS, lambda: dit(x, 2))
    assert out.shape == (1, 16, 2, 6, 6)
    assert dit.calls == calls + 1, "no cached delta of the new shape: the forward must run"
    assert run.stats.resets == 1 and "state reset 1x" in run.stats.summary()


def test_a_new_run_starts_without_cache():
    dit = FakeDiT()
    policy = TeaCachePolicy((1.0, 0.0), 1e9, StepGate(first_steps=0, last_steps=0, max_consecutive_skips=100))
    for _ in range(2):
        run = StepCacheRun(policy)
        run_steps(run, dit, [(0, "c")], steps=4)
        assert run.stats.decisions[0] == (0, True)
        assert run.stats.forwards_computed == 1
    assert dit.calls == 2


def test_offloaded_residual_gives_the_same_outputs():
    policy = MagCachePolicy((1.0,) * STEPS, (1.0,) * STEPS, 1e9, gate=FORCED_ENDS)
    kept = run_steps(StepCacheRun(policy), FakeDiT(), [(0, "c")])
    offloaded_run = StepCacheRun(policy, storage_device=torch.device("cpu"))
    offloaded = run_steps(offloaded_run, FakeDiT(), [(0, "c")])
    assert all(torch.equal(a, b) for a, b in zip(kept, offloaded))
    assert offloaded_run.stats.as_dict()["forwards_skipped"] == 6
    assert offloaded_run.stats.as_dict()["decisions"][1] == {"step": 1, "computed": False}


def test_teacache_needs_an_indicator():
    run = StepCacheRun(TeaCachePolicy((1.0, 0.0), 1.0))
    with pytest.raises(ValueError, match="indicator"):
        run.forward(latent(0), [(0, "c")], 0, STEPS, lambda: FakeDiT()(latent(0), 0))
