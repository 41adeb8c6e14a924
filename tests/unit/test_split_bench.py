"""``bench --split-at``'s pairing of servers, the Ray stage split and the 4090 projection's arithmetic (no server)."""
from __future__ import annotations

import pytest

from benchmarks.lib.split_projection import project, switch_range
from wan_accel.batch.split_batch import split_pairs
from wan_accel.cli import main
from wan_accel.errors import UsageError


def test_servers_pair_up_in_order_and_an_odd_count_is_refused_by_name():
    assert split_pairs(["http://a:1", "http://b:2", "http://c:3", "http://d:4"]) == [
        ("http://a:1", "http://b:2"), ("http://c:3", "http://d:4")]
    for urls in (["http://a:1"], ["http://a:1", "http://b:2", "http://c:3"]):
        with pytest.raises(UsageError, match=f"servers in pairs, --server A --server B .*got {len(urls)}"):
            split_pairs(urls)


def test_bench_split_at_with_one_server_exits_with_the_usage_error(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.txt").write_text("a cat", encoding="utf-8")
    code = main(["bench", "--split-at", "2", "--server", "http://127.0.0.1:1", "--pairs", str(tmp_path),
                 "--out", str(tmp_path / "out")])
    assert code == UsageError.exit_code
    assert "bench --split-at needs servers in pairs" in capsys.readouterr().err


def test_ray_stage_counts_give_the_odd_worker_to_stage_b():
    pytest.importorskip("ray")
    from wan_accel.batch.ray_split import stage_counts

    assert [stage_counts(n) for n in (2, 3, 4)] == [(1, 1), (1, 2), (2, 2)]


def test_projection_pipelined_gains_the_switches_and_loses_to_an_unbalanced_stage():
    balanced = project(step_s=10.0, steps_high=2, steps_low=2, vae_s=0.0, transfer_s=0.0, switch_s=1.0)
    assert balanced.data_parallel_per_min == pytest.approx(2 * 60 / 42)   # 4 steps + 2 switches a video per GPU
    assert balanced.pipelined_per_min == pytest.approx(60 / 20)            # the slower stage: 2 steps
    assert balanced.ratio == pytest.approx(42 / 40)
    heavy_b = project(step_s=10.0, steps_high=2, steps_low=2, vae_s=10.0, transfer_s=0.0, switch_s=1.0)
    assert heavy_b.ratio == pytest.approx((60 / 30) / (2 * 60 / 52)) and heavy_b.ratio < 1   # B: 2 steps + VAE
    switch = switch_range()
    assert 0.4 < switch.fast < 0.5 < 0.9 < switch.slow < 1.0   # 10.73 GiB over PCIe 4.0 x16, pinned to pageable
