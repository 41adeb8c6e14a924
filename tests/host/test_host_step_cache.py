"""TeaCache / MagCache / calibration nodes on the real host: forwards counted, outputs compared with the plain model.

In-process tests drive the host's KSampler path (``comfy.sample.sample``) on the tiny Wan 2.1 I2V DiT at 8
uni_pc steps and count the DiT forwards that really ran with an innermost DIFFUSION_MODEL wrapper. Graph
tests run the nodes through the server and read the statistics line the nodes log after every run.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.support.comfy_server import ComfyServer, read_latent
from tests.support.graphs import NODE, tiny_i2v_graph
from tests.support.host_inprocess import import_pack_module
from tests.support.tiny_sampling import ForwardCounter, TinyWanSampler, psnr, relative_l2

STEPS = 8
TINY_PROFILE = Path(__file__).resolve().parents[1] / "data" / "step_cache_tiny_i2v_8steps.json"
TEA_ARGS = dict(model_type="wan2.1_i2v_480p_14B", profile="none", rel_l1_thresh=0.3, first_steps=1, last_steps=1,
                max_consecutive_skips=100, start_percent=0.0, end_percent=1.0, cache_device="compute")
MAG_ARGS = dict(model_type="wan2.1_i2v_480p_14B", profile="none", magcache_thresh=0.24, magcache_K=100,
                retention_ratio=0.2, last_steps=1, cache_device="compute")
# Relative L2 of a cached run against the uncached one. Garbage is far above every bound: a zero latent scores 1.0,
# unit noise 1.05, the sampler's own input noise 0.82, and even a plain run of only 2 steps 0.48 (measured on both
# hosts; the bounds have about 1.5x margin over the measured values quoted at each use).


@pytest.fixture(scope="module")
def tiny() -> TinyWanSampler:
    return TinyWanSampler()


@pytest.fixture(scope="module")
def nodes():
    return import_pack_module("nodes.step_cache")


@pytest.fixture(scope="module")
def stats():
    return import_pack_module("nodes.stats")


def run_stats(stats, sample, node_id: str) -> tuple[object, dict]:
    """``sample()`` run as node ``node_id`` of a prompt, and the stats the run published for that node through the
    pack's one stats channel (``GET /wan_accel/stats`` serves the same entries)."""
    from comfy_execution.utils import CurrentNodeContext

    with CurrentNodeContext("step-cache-test", node_id):
        out = sample()
    return out, stats.latest_stats()[node_id]["stats"]


@pytest.fixture(scope="module")
def reference(tiny) -> torch.Tensor:
    return tiny.sample(steps=STEPS)


def teacache(nodes, model, **overrides):
    return nodes.WanTeaCache.execute(model, **{**TEA_ARGS, **overrides}).result[0]


def magcache(nodes, model, **overrides):
    return nodes.WanMagCache.execute(model, **{**MAG_ARGS, **overrides}).result[0]


def sigmas_of(counter: ForwardCounter) -> list[float]:
    return [round(f.sigma, 6) for f in counter.forwards]


def test_threshold_zero_never_skips_and_matches_the_unpatched_model(tiny, nodes, stats, reference):
    for node_id, name, make in (("10", "TeaCache", lambda: teacache(nodes, tiny.patcher, rel_l1_thresh=0.0)),
                                ("11", "MagCache", lambda: magcache(nodes, tiny.patcher, magcache_thresh=0.0))):
        counter = ForwardCounter()
        out, reported = run_stats(stats, lambda: tiny.sample(make(), steps=STEPS, counter=counter), node_id)
        assert len(counter.forwards) == STEPS, name
        assert torch.equal(out, reference), name
        assert (reported["steps_computed"], reported["steps_skipped"]) == (STEPS, 0), name


def test_huge_threshold_computes_only_the_forced_first_and_last_steps(tiny, nodes, stats, reference):
    plain = ForwardCounter()
    tiny.sample(steps=STEPS, counter=plain)
    expected = [plain.forwards[0].sigma, plain.forwards[-1].sigma]
    for node_id, name, make in (("12", "TeaCache", lambda: teacache(nodes, tiny.patcher, rel_l1_thresh=1e9)),
                                ("13", "MagCache", lambda: magcache(nodes, tiny.patcher, magcache_thresh=1e9))):
        counter = ForwardCounter()
        out, reported = run_stats(stats, lambda: tiny.sample(make(), steps=STEPS, counter=counter), node_id)
        print(f"\n[host] {name} huge threshold: {len(counter.forwards)}/{STEPS} forwards, "
              f"PSNR {psnr(out, reference):.2f} dB, rel. L2 {relative_l2(out, reference):.4f} vs no cache")
        assert [f.sigma for f in counter.forwards] == expected, name
        assert (reported["steps_computed"], reported["steps_skipped"]) == (2, 6), name
        assert not torch.equal(out, reference), name  # six steps really reused the cache
        assert relative_l2(out, reference) < 0.15, name  # measured 0.0998 (37.7 dB)


def test_two_runs_in_a_row_at_cfg_1_recompute_the_second_runs_first_step(tiny, nodes):
    model = teacache(nodes, tiny.patcher, rel_l1_thresh=1e9, first_steps=0)
    runs = []
    for _ in range(2):
        counter = ForwardCounter()
        runs.append((tiny.sample(model, steps=STEPS, cfg=1.0, counter=counter), counter))
    (first_out, first), (second_out, second) = runs
    assert sigmas_of(first) == sigmas_of(second)
    assert len(second.forwards) == 2 and second.forwards[0].sigma == pytest.approx(1.0)
    assert torch.equal(first_out, second_out), "state leaked from the first run into the second"


def test_a_resolution_change_between_runs_needs_no_reset_by_hand(tiny, nodes):
    model = magcache(nodes, tiny.patcher, magcache_thresh=1e9)
    for width, height in ((64, 64), (96, 80), (64, 64)):
        counter = ForwardCounter()
        out = tiny.sample(model, steps=STEPS, width=width, height=height, counter=counter)
        assert out.shape == (1, 16, 2, height // 8, width // 8)
        assert len(counter.forwards) == 2
        assert {f.shape for f in counter.forwards} == {(1, 36, 2, height // 8, width // 8)}


def test_cond_and_uncond_streams_at_cfg_3(tiny, nodes):
    reference = tiny.sample(steps=STEPS, cfg=3.0)
    exact = tiny.sample(teacache(nodes, tiny.patcher, rel_l1_thresh=0.0), steps=STEPS, cfg=3.0)
    assert torch.equal(exact, reference)
    counter = ForwardCounter()
    cached = tiny.sample(teacache(nodes, tiny.patcher, rel_l1_thresh=1e9), steps=STEPS, cfg=3.0, counter=counter)
    assert len(counter.forwards) == 2 and all(sorted(f.cond_or_uncond) == [0, 1] for f in counter.forwards)
    print(f"\n[host] TeaCache huge threshold at cfg 3: PSNR {psnr(cached, reference):.2f} dB, "
          f"rel. L2 {relative_l2(cached, reference):.4f} vs no cache")
    assert not torch.equal(cached, reference)
    assert relative_l2(cached, reference) < 0.2  # measured 0.139 (33.7 dB); both streams reuse their own residual


def test_offloaded_cache_gives_the_same_output(tiny, nodes):
    kept = tiny.sample(magcache(nodes, tiny.patcher, magcache_thresh=0.1), steps=STEPS)
    offloaded = tiny.sample(magcache(nodes, tiny.patcher, magcache_thresh=0.1, cache_device="offload"), steps=STEPS)
    assert torch.equal(kept, offloaded)


def test_calibration_records_the_shipped_tiny_profile_and_the_caches_use_it(tiny, nodes, reference, tmp_path,
                                                                          monkeypatch):
    import folder_paths

    calibrate = import_pack_module("nodes.step_cache_calibrate")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, nodes.PROFILE_FOLDER, ([str(tmp_path)], set()))
    counter = ForwardCounter()
    out = tiny.sample(calibrate.WanStepCacheCalibrate.execute(tiny.patcher, "tiny", 2).result[0], steps=STEPS,
                      counter=counter)
    assert len(counter.forwards) == STEPS and torch.equal(out, reference)
    fresh = json.loads((tmp_path / "tiny.json").read_text())
    shipped = json.loads(TINY_PROFILE.read_text())
    assert fresh["sigmas"] == pytest.approx(shipped["sigmas"])
    assert fresh["streams"]["cond"]["mag_ratio"] == pytest.approx(shipped["streams"]["cond"]["mag_ratio"], rel=1e-4)
    assert nodes.list_profiles() == ["none", "tiny.json"]

    # measured: TeaCache 5/8 forwards, rel. L2 0.0297 (48.3 dB); MagCache 3/8 forwards, 0.1066 (37.1 dB)
    for name, model, bound in (
            ("TeaCache", teacache(nodes, tiny.patcher, profile="tiny.json", rel_l1_thresh=0.5), 0.05),
            ("MagCache", magcache(nodes, tiny.patcher, profile="tiny.json", magcache_thresh=0.1), 0.15)):
        counter = ForwardCounter()
        cached = tiny.sample(model, steps=STEPS, counter=counter)
        print(f"\n[host] {name} with the tiny profile: {len(counter.forwards)}/{STEPS} forwards, "
              f"PSNR {psnr(cached, reference):.2f} dB, rel. L2 {relative_l2(cached, reference):.4f} vs no cache")
        assert 2 < len(counter.forwards) < STEPS, name
        assert relative_l2(cached, reference) < bound, name


def test_a_later_cache_node_replaces_an_earlier_one(tiny, nodes, reference):
    model = teacache(nodes, magcache(nodes, tiny.patcher, magcache_thresh=1e9), rel_l1_thresh=0.0)
    counter = ForwardCounter()
    assert torch.equal(tiny.sample(model, steps=STEPS, counter=counter), reference)
    assert len(counter.forwards) == STEPS


def test_the_run_is_reported_whatever_the_order_of_the_outer_sample_wrappers(tiny, nodes, stats):
    """The host runs OUTER_SAMPLE wrappers in the order they were added (first = outermost) and has no priority;
    ours open or join the run's context themselves. With the run-context wrapper innermost, the order where the step
    cache's report used to find no context, the run still reports the same steps as in the order the node builds."""
    import comfy.patcher_extension
    from comfy_execution.utils import CurrentNodeContext

    run_context = import_pack_module("nodes.run_context")
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    with CurrentNodeContext("step-cache-test", "30"):  # the node the cache reports on is the one that built it
        built = teacache(nodes, tiny.patcher, rel_l1_thresh=1e9)
    with CurrentNodeContext("step-cache-test", "31"):
        context_innermost = teacache(nodes, tiny.patcher, rel_l1_thresh=1e9)
    assert list(built.wrappers[outer]) == [run_context.WRAPPER_KEY, nodes.WRAPPER_KEY]
    context_innermost.remove_wrappers_with_key(outer, run_context.WRAPPER_KEY)
    run_context.install_run_context(context_innermost)
    assert list(context_innermost.wrappers[outer]) == [nodes.WRAPPER_KEY, run_context.WRAPPER_KEY]
    reports = {}
    for node_id, model in (("30", built), ("31", context_innermost)):
        out, reported = run_stats(stats, lambda: tiny.sample(model, steps=STEPS), node_id)
        reports[node_id] = (reported["steps_computed"], reported["steps_skipped"], out)
    assert reports["30"][:2] == reports["31"][:2] == (2, 6)
    assert torch.equal(reports["30"][2], reports["31"][2])


def test_teacache_refuses_a_model_that_is_not_wan(nodes):
    class NotWan:
        def get_model_object(self, name):
            return torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"TeaCache \(Wan\) needs a Wan 2.1 model"):
        nodes.WanTeaCache.execute(NotWan(), **TEA_ARGS)


# ---------------------------------------------------------------------------------------------- graph tests

def with_patch(graph: dict, node_id: str, class_type: str, inputs: dict) -> dict:
    """``graph`` with node ``class_type`` inserted between the model loader and the KSampler."""
    graph[node_id] = {"class_type": class_type, "inputs": {"model": [NODE["model"], 0], **inputs}}
    graph[NODE["sampler"]]["inputs"]["model"] = [node_id, 0]
    return graph


def run_latent(comfy: ComfyServer, graph: dict) -> torch.Tensor:
    [path] = comfy.output_files(comfy.run(graph, timeout=600), "latents")
    return read_latent(path)


def stats_lines(comfy: ComfyServer, policy: str) -> list[str]:
    return re.findall(rf"{policy}: computed \d+/\d+ steps, skipped \d+", comfy.log_text())


def test_graph_teacache_at_threshold_zero_matches_the_plain_graph(wan_pack: ComfyServer):
    plain = run_latent(wan_pack, tiny_i2v_graph(steps=STEPS, seed=5, filename_prefix="latents/sc_plain"))
    before = len(stats_lines(wan_pack, "TeaCache"))
    graph = with_patch(tiny_i2v_graph(steps=STEPS, seed=5, filename_prefix="latents/sc_tea0"), "20",
                       "WanAccelTeaCache", {**TEA_ARGS, "rel_l1_thresh": 0.0})
    assert torch.equal(run_latent(wan_pack, graph), plain)
    assert stats_lines(wan_pack, "TeaCache")[before:] == ["TeaCache: computed 8/8 steps, skipped 0"]


def test_graph_magcache_reports_only_forced_steps_on_every_run(wan_pack: ComfyServer):
    before = len(stats_lines(wan_pack, "MagCache"))
    for seed in (1, 2):
        graph = with_patch(tiny_i2v_graph(steps=STEPS, seed=seed, filename_prefix="latents/sc_mag"), "20",
                           "WanAccelMagCache", {**MAG_ARGS, "magcache_thresh": 10.0})
        assert torch.isfinite(run_latent(wan_pack, graph)).all()
    assert stats_lines(wan_pack, "MagCache")[before:] == ["MagCache: computed 2/8 steps, skipped 6"] * 2


def test_graph_calibrate_then_teacache_with_the_profile(wan_pack: ComfyServer):
    graph = with_patch(tiny_i2v_graph(steps=STEPS, seed=3, filename_prefix="latents/sc_cal"), "20",
                       "WanAccelStepCacheCalibrate", {"profile_name": "host_tiny", "fit_degree": 2})
    run_latent(wan_pack, graph)
    profile = wan_pack.models_dir / "wan_accel_step_cache" / "host_tiny.json"
    assert json.loads(profile.read_text())["steps"] == STEPS
    kind, options = wan_pack.object_info("WanAccelTeaCache")["WanAccelTeaCache"]["input"]["required"]["profile"]
    assert kind == "COMBO" and "host_tiny.json" in options["options"]
    before = len(stats_lines(wan_pack, "TeaCache"))
    graph = with_patch(tiny_i2v_graph(steps=STEPS, seed=3, filename_prefix="latents/sc_tea_profile"), "20",
                       "WanAccelTeaCache", {**TEA_ARGS, "profile": "host_tiny.json", "rel_l1_thresh": 10.0})
    run_latent(wan_pack, graph)
    assert stats_lines(wan_pack, "TeaCache")[before:] == ["TeaCache: computed 2/8 steps, skipped 6"]


def test_graph_teacache_run_stats_reach_the_stats_route(wan_pack: ComfyServer):
    profiles = wan_pack.models_dir / "wan_accel_step_cache"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "shipped_tiny.json").write_text(TINY_PROFILE.read_text())
    before = len(stats_lines(wan_pack, "TeaCache"))
    graph = with_patch(tiny_i2v_graph(steps=STEPS, seed=7, filename_prefix="latents/sc_tea_stats"), "20",
                       "WanAccelTeaCache", {**TEA_ARGS, "profile": "shipped_tiny.json", "rel_l1_thresh": 10.0})
    run_latent(wan_pack, graph)
    [line] = stats_lines(wan_pack, "TeaCache")[before:]
    computed, steps, skipped = map(int, re.fullmatch(r"TeaCache: computed (\d+)/(\d+) steps, skipped (\d+)",
                                                     line).groups())
    entry = wan_pack.get_json("/wan_accel/stats")["nodes"]["20"]
    print(f"\nnode text: {line}\nkept stats: {json.dumps(entry, ensure_ascii=False)}")
    assert entry["node_type"] == "WanAccelTeaCache" and entry["prompt_id"] in wan_pack.history()
    stats = entry["stats"]
    assert stats["cache_policy"] == "TeaCache"
    assert stats["steps_computed"] + stats["steps_skipped"] == STEPS == steps
    assert (stats["steps_computed"], stats["steps_skipped"]) == (computed, skipped)
    assert stats["seconds_per_step"] > 0
    assert entry["lines"][0] == f"TeaCache: {computed} computed · {skipped} skipped"
    assert any(text.startswith("DiT forwards: ") for text in entry["lines"])
