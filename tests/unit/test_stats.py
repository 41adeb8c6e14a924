"""nodes/stats without the host: display lines, warnings, merge rules, the websocket message and the GET route.

The package is loaded from its folder with three host modules stubbed: ``comfy_execution.utils`` (the executing node),
``server`` (a ``PromptServer`` that records ``send_sync`` and routes) and ``aiohttp.web`` (``json_response``).
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

PACKAGE_NAME = "wan_accel_stats_under_test"
STATS_PACKAGE = Path(__file__).resolve().parents[2] / "nodes" / "stats"


class _Context(NamedTuple):
    prompt_id: str
    node_id: str
    list_index: Optional[int]


class _Routes:
    def __init__(self):
        self.handlers: dict[tuple[str, str], object] = {}

    def get(self, path: str):
        def register(handler):
            self.handlers[("GET", path)] = handler
            return handler
        return register


class _PromptServer:
    instance = None

    def __init__(self, client_id: Optional[str]):
        self.client_id = client_id
        self.sent: list[tuple[str, dict, Optional[str]]] = []
        self.routes = _Routes()

    def send_sync(self, event: str, data: dict, sid: Optional[str] = None) -> None:
        self.sent.append((event, json.loads(json.dumps(data)), sid))


class Host:
    """The stubbed host: set ``executing`` to a node id to be 'inside' that node's execute in prompt ``prompt_id``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, with_server: bool):
        self.executing: Optional[str] = None
        self.prompt_id = "p1"
        self.prompt_server = _PromptServer("client-1") if with_server else None
        utils = types.ModuleType("comfy_execution.utils")
        utils.get_executing_context = self._context
        package = types.ModuleType("comfy_execution")
        package.utils = utils
        server = types.ModuleType("server")
        server.PromptServer = type("PromptServer", (), {"instance": self.prompt_server})
        web = types.ModuleType("aiohttp.web")
        web.Request = object
        web.Response = dict
        web.json_response = lambda data: {"json": data}
        aiohttp = types.ModuleType("aiohttp")
        aiohttp.web = web
        for name, module in {"comfy_execution": package, "comfy_execution.utils": utils, "server": server,
                             "aiohttp": aiohttp, "aiohttp.web": web}.items():
            monkeypatch.setitem(sys.modules, name, module)
        for name in (PACKAGE_NAME, *(f"{PACKAGE_NAME}.{part}" for part in ("model", "store", "transport", "publish"))):
            monkeypatch.setitem(sys.modules, name, None)  # removed again when the test ends, whatever it imported
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location(PACKAGE_NAME, STATS_PACKAGE / "__init__.py",
                                                      submodule_search_locations=[str(STATS_PACKAGE)])
        self.stats = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = self.stats
        spec.loader.exec_module(self.stats)

    def _context(self) -> Optional[_Context]:
        return None if self.executing is None else _Context(self.prompt_id, self.executing, None)

    def get_route(self) -> dict:
        handler = self.prompt_server.routes.handlers[("GET", "/wan_accel/stats")]
        return asyncio.run(handler(None))["json"]


@pytest.fixture
def host(monkeypatch) -> Host:
    host = Host(monkeypatch, with_server=True)
    assert host.stats.register_routes() is True  # what the pack's comfy_entrypoint does
    return host


def test_importing_the_package_adds_no_route(monkeypatch):
    host = Host(monkeypatch, with_server=True)
    assert host.prompt_server.routes.handlers == {}
    assert host.stats.register_routes() is True
    assert list(host.prompt_server.routes.handlers) == [("GET", "/wan_accel/stats")]


def test_lines_and_warnings_of_every_field(host):
    stats = host.stats.NodeStats(
        attention_backend="sage qk_int8_pv_fp16_cuda", attention_fallbacks=3, cache_policy="teacache",
        steps_computed=5, steps_skipped=3, dequant_path="torch per layer → bfloat16 on cuda",
        weight_types={"Q6_K": 400, "F32": 803}, resident_bytes=12_080_000_000, seconds_per_step=12.34,
        seconds_per_frame=0.0144, text_encoder_cache="hit", image_encoder_cache="miss", notes=("nan guard: 0 of 640 calls recomputed",))
    assert stats.lines() == [
        "attention: sage qk_int8_pv_fp16_cuda · 3 fallbacks",
        "teacache: 5 computed · 3 skipped",
        "dequant: torch per layer → bfloat16 on cuda",
        "weights: F32×803 Q6_K×400 · 11.3 GiB resident",
        "time: 12.3 s/step",
        "time: 14 ms/frame",
        "text encoder cache: hit",
        "image encoder cache: miss",
        "nan guard: 0 of 640 calls recomputed",
    ]
    assert stats.all_warnings() == ["3 attention calls fell back from sage qk_int8_pv_fp16_cuda"]


def test_a_cache_that_skips_nothing_warns_and_a_clean_run_does_not(host):
    never = host.stats.NodeStats(cache_policy="teacache", steps_computed=8, steps_skipped=0)
    clean = host.stats.NodeStats(attention_backend="sage", attention_fallbacks=0, steps_computed=5, steps_skipped=3)
    assert never.all_warnings() == ["teacache skipped no step of 8"]
    assert clean.lines()[0] == "attention: sage · 0 fallbacks"
    assert clean.all_warnings() == []


def test_number_formats(host):
    stats = host.stats
    assert [stats.format_bytes(n) for n in (512 * 1024, 12 * 2**20 + 2**19, 3 * 2**30)] == \
        ["512 KiB", "12.5 MiB", "3.0 GiB"]
    assert [stats.format_seconds(s) for s in (0.8504, 1.0, 61.26)] == ["850 ms", "1.0 s", "61.3 s"]
    assert stats.seconds_per_step(10.0, [1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0]) == 1.25
    assert stats.seconds_per_step(3.0, [0.0]) is None


def test_report_from_execute_sends_the_executing_node_and_keeps_it_for_the_route(host):
    host.executing = "12"
    message = host.stats.report_node_stats("WanAccelLoadDiTGGUF", host.stats.NodeStats(
        dequant_path="torch per layer → float32 on cpu", weight_types={"Q6_K": 24}, resident_bytes=5 * 2**20,
        warnings=("weights dequantise on the CPU: no GPU in use",)))
    [(event, sent, sid)] = host.prompt_server.sent
    assert (event, sid) == ("wan_accel.stats", "client-1")
    assert sent == message
    assert {key: sent[key] for key in ("node_id", "node_type", "prompt_id")} == \
        {"node_id": "12", "node_type": "WanAccelLoadDiTGGUF", "prompt_id": "p1"}
    assert sent["stats"] == {"dequant_path": "torch per layer → float32 on cpu", "weight_types": {"Q6_K": 24},
                             "resident_bytes": 5 * 2**20}
    assert sent["lines"] == ["dequant: torch per layer → float32 on cpu", "weights: Q6_K×24 · 5.0 MiB resident"]
    assert sent["warnings"] == ["weights dequantise on the CPU: no GPU in use"]
    assert host.get_route() == {"nodes": {"12": sent}}


def test_run_report_merges_onto_the_nodes_execute_report_and_a_new_execute_replaces_it(host):
    stats = host.stats
    host.executing = "4"
    target = stats.current_target("WanAccelAttention")
    stats.report_node_stats("WanAccelAttention", stats.NodeStats(attention_backend="sage", notes=("requested auto",)))
    host.executing, host.prompt_id = "8", "p2"  # the sampler runs the next prompt; the patch node came from the cache
    merged = stats.report_run_stats(target, stats.NodeStats(attention_fallbacks=2, seconds_per_step=0.5))
    assert (merged["node_id"], merged["node_type"], merged["prompt_id"]) == ("4", "WanAccelAttention", "p2")
    assert merged["lines"] == ["attention: sage · 2 fallbacks", "time: 500 ms/step", "requested auto"]
    assert merged["warnings"] == ["2 attention calls fell back from sage"]
    again = stats.report_run_stats(target, stats.NodeStats(attention_fallbacks=0, seconds_per_step=0.25))
    assert again["lines"] == ["attention: sage · 0 fallbacks", "time: 250 ms/step", "requested auto"]
    host.executing = "4"
    fresh = stats.report_node_stats("WanAccelAttention", stats.NodeStats(attention_backend="sdpa"))
    assert fresh["lines"] == ["attention: sdpa"]
    assert [sent[1]["node_id"] for sent in host.prompt_server.sent] == ["4", "4", "4", "4"]


def test_a_run_that_changes_nothing_the_node_shows_sends_nothing_and_keeps_its_prompt(host):
    stats = host.stats
    host.executing, host.prompt_id = "3", "p1"
    target = stats.current_target("WanAccelLoadDiTGGUF")
    stats.report_node_stats("WanAccelLoadDiTGGUF", stats.NodeStats(resident_bytes=2**20))
    observed = stats.NodeStats(dequant_path="torch per layer → float32 on cpu (data on cpu)")
    first = stats.report_run_stats(target, observed)
    host.executing, host.prompt_id = "8", "p2"  # the loader came from the host's cache, the sampler ran again
    second = stats.report_run_stats(target, observed)
    assert second == first and first["prompt_id"] == "p1"
    assert len(host.prompt_server.sent) == 2 and host.get_route()["nodes"]["3"] == first
    changed = stats.report_run_stats(target, stats.NodeStats(dequant_path="triton per layer → bfloat16 on cuda"))
    assert changed["prompt_id"] == "p2" and len(host.prompt_server.sent) == 3


def test_run_report_does_not_merge_onto_another_node_type_with_the_same_id(host):
    stats = host.stats
    host.executing = "4"
    stats.report_node_stats("WanAccelLoadDiTGGUF", stats.NodeStats(dequant_path="torch"))
    target = stats.StatsTarget("4", "WanAccelStepCache", "p2")
    message = stats.report_run_stats(target, stats.NodeStats(steps_computed=5, steps_skipped=3))
    assert message["lines"] == ["cache: 5 computed · 3 skipped"]
    assert host.get_route()["nodes"]["4"]["node_type"] == "WanAccelStepCache"


def test_outside_a_host_run_nothing_is_sent(host):
    stats = host.stats
    assert stats.current_target("WanAccelLoadDiTGGUF") is None
    assert stats.report_node_stats("WanAccelLoadDiTGGUF", stats.NodeStats(dequant_path="torch")) is None
    assert stats.report_run_stats(None, stats.NodeStats(seconds_per_step=1.0)) is None
    assert host.prompt_server.sent == [] and host.get_route() == {"nodes": {}}


def test_without_a_host_server_reports_are_kept_and_no_route_is_registered(monkeypatch):
    host = Host(monkeypatch, with_server=False)
    host.executing = "7"
    message = host.stats.report_node_stats("WanAccelLoadDiTGGUF", host.stats.NodeStats(seconds_per_step=2.0))
    assert message["lines"] == ["time: 2.0 s/step"]
    assert host.stats.latest_stats() == {"7": message}
    assert host.stats.register_routes() is False


def test_memory_keeps_the_latest_entries_only(host):
    stats = host.stats
    for index in range(stats.MAX_ENTRIES + 3):
        stats.report_run_stats(stats.StatsTarget(str(index), "WanAccelLoadDiTGGUF"), stats.NodeStats(resident_bytes=index))
    kept = stats.latest_stats()
    assert len(kept) == stats.MAX_ENTRIES
    assert "0" not in kept and "2" not in kept and str(stats.MAX_ENTRIES + 2) in kept
    assert kept["3"]["stats"] == {"resident_bytes": 3}
