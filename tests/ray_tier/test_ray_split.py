"""``wan-accel bench --ray --split-at 2``: a pipelined split batch on two Ray workers, worker 1 running stage A of
every sample and worker 2 stage B, with the tiny winner of ``test_ray_bench.py`` at 4 steps.

Proven here: 4 samples each finish exactly once (``results.json``, one video each, and each server's ``/history``
holding each sample's stage once); every result names worker 1 for stage A and worker 2 for stage B; and the stages
overlap: worker 1 starts stage A of the second sample before worker 2 has finished the first.
"""
from __future__ import annotations

from .test_ray_bench import assert_each_sample_once, pairs_csv, ray_args, results_of, run_cli, start_image  # noqa: F401


def test_pipelined_split_runs_every_sample_once_with_both_stages_busy(ray_address, ray_models, start_image,
                                                                       tmp_path):
    base, flags = ray_models
    pairs, out = pairs_csv(tmp_path / "pairs.csv", start_image, 4, 40), tmp_path / "ray"
    code, transcript = run_cli([*ray_args(ray_address, base, flags, pairs, out), "--steps", "4", "--split-at", "2"])
    assert code == 0
    assert "split at step 2, fp32 transfer: stage A on worker 1, stage B on worker 2" in transcript
    audits = assert_each_sample_once(transcript, out, 4)
    assert sorted(audits["worker 1"]) == sorted(audits["worker 2"]) == ["s0", "s1", "s2", "s3"]
    assert {(r["stage_a"], r["stage_b"], r["worker"]) for r in results_of(out)} == {("worker 1", "worker 2",
                                                                                    "worker 2")}
    lines = transcript.splitlines()
    second_a = lines.index("sample 2/4: s1 stage A on worker 1")
    first_done = next(i for i, line in enumerate(lines)
                      if line.startswith("sample 1/4: s0 ") and line.endswith(" s on worker 2"))
    assert second_a < first_done, "stage A of s1 ran while stage B of s0 did"
