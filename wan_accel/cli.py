"""wan-accel: run a shipped workflow headless on a ComfyUI server, bench a batch like the challenge, or check setup.

    wan-accel run --workflow winner --image in.png --prompt "..." [--comfyui DIR | --server URL] [--seed N] [--out DIR]
    wan-accel bench --workflow winner --pairs DIR_OR_CSV [--out DIR] [--server URL]  (one server: no Ray)
    wan-accel bench ... --server URL --server URL ... [--servers FILE] [--ray ADDRESS]  (two or more: on Ray)
    wan-accel bench --workflow winner --pairs DIR_OR_CSV --ray [local|auto|ADDRESS] --comfyui DIR [--ray-workers N]
    wan-accel bench ... --split-at K --server A --server B  (or --ray ...): every sample split, A then B
    wan-accel doctor [--server URL] [--comfyui DIR]
    wan-accel score --videos DIR_OR_RESULTS_JSON [--images DIR] [--metrics LIST] [--out scores.json]
    wan-accel compare A B [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from .batch.one_server import run_one_server
from .batch.progress import BatchDisplay
from .batch.samples import METRICS, load_pairs
from .batch.servers import ComfyBenchServer, server_urls
from .batch.split_batch import sample_graphs, split_pairs
from .client import DEFAULT_SERVER, ComfyClient, Execution, ProgressEvent, generate
from .client_files import prepare_out_dir
from .device_fit import cpu_only, cpu_warnings
from .doctor import run_doctor
from .errors import UsageError, WanAccelError, mask_secrets, node_label
from .graph_fill import Overrides, fill, load_api_workflow, parse_setting
from .launcher import LocalComfyUI
from .ray_cli import add_ray_options, check_ray_options, cmd_ray_bench, require_ray
from .score_cli import add_commands, add_score_options, bench_scorer
from .split_run import add_split_options, run_split_command
from .workflow_catalog import WORKFLOWS, find_workflow

BAR_WIDTH = 24
MODEL_FLAGS = {"dit": "--dit", "dit_high": "--dit-high", "dit_low": "--dit-low", "text_encoder": "--text-encoder",
               "clip_vision": "--clip-vision", "vae": "--vae"}
MODEL_HELP = {"dit": "DiT file of a one-model workflow (Wan 2.1)",
              "dit_high": "high-noise expert's DiT file of a Wan 2.2 workflow",
              "dit_low": "low-noise expert's DiT file of a Wan 2.2 workflow"}


class ProgressPrinter:
    """Shows a prompt's progress on a stream: one line per node, a bar with step i/n for nodes that report steps.

    On a terminal the bar redraws in place; otherwise (logs, pipes) every update is its own line.
    """

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.started = False
        self.open_bar = False

    def _line(self, text: str) -> None:
        if self.open_bar:
            self.stream.write("\n")
            self.open_bar = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _bar(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
            self.open_bar = True
        else:
            self._line(text)

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "warning":
            self._line(f"  warning: {event.label}")
        elif event.kind == "queued" and not self.started and event.value > 0:
            self._line(f"  waiting in the server's queue: {event.value} prompt(s) ahead")
        elif event.kind == "started":
            self.started = True
        elif event.kind == "cached" and event.value:
            self._line(f"  {event.value} node(s) reused from the server's cache")
        elif event.kind == "node":
            self._line(f"  #{event.node_id} {event.label}")
        elif event.kind == "step" and event.total > 0:
            filled = round(BAR_WIDTH * event.value / event.total)
            self._bar(f"  #{event.node_id} {event.label}: step {event.value}/{event.total} "
                      f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]")
        elif event.kind == "finished" and self.open_bar:
            self._line("")


def _multiple(value: int | None, of: int, remainder: int, flag: str, rule: str) -> None:
    if value is not None and (value < 1 or value % of != remainder):
        raise UsageError(f"{flag} {value}: {rule}")


def overrides_from(args: argparse.Namespace) -> Overrides:
    """The workflow overrides common to run and bench: negative prompt, size, steps, fps, model files, --set."""
    _multiple(args.width, 16, 0, "--width", "must be a positive multiple of 16")
    _multiple(args.height, 16, 0, "--height", "must be a positive multiple of 16")
    _multiple(args.length, 4, 1, "--length", "must be 4k+1 frames (1, 5, 9, ..., 81)")
    models = {role: getattr(args, role) for role in MODEL_FLAGS if getattr(args, role)}
    return Overrides(negative=args.negative, steps=args.steps, width=args.width, height=args.height,
                     length=args.length, fps=args.fps, models=models, settings=dict(args.set))


def _print_texts(execution: Execution, graph: Mapping[str, Any], out: TextIO) -> None:
    for node_id, texts in execution.texts.items():
        for text in texts:
            out.write(f"  #{node_id} {node_label(graph, node_id)}: {text}\n")


def _comfyui_launcher(args: argparse.Namespace) -> LocalComfyUI | None:
    """The ComfyUI ``run`` starts itself (``--comfyui DIR`` without ``--server``), None to use a running one."""
    if args.comfyui is None:
        if args.comfyui_python or args.comfyui_base:
            raise UsageError("--comfyui-python and --comfyui-base need --comfyui DIR (the ComfyUI to start)")
        return None
    if args.server is not None:
        raise UsageError("--comfyui starts its own ComfyUI and --server uses a running one: pass only one of them")
    return LocalComfyUI(Path(args.comfyui), args.comfyui_python,
                        base_dir=Path(args.comfyui_base) if args.comfyui_base else None,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: one image and prompt through a workflow, outputs downloaded, wall time printed. With
    ``--comfyui DIR`` it starts that ComfyUI first and always stops it, showing its log's tail if the job fails."""
    started = time.monotonic()
    name, path = find_workflow(args.workflow)
    template = load_api_workflow(path)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    overrides = dataclasses.replace(overrides_from(args), prompt=args.prompt, seed=seed,
                                    filename_prefix=f"wan_accel/{Path(args.image).stem}")
    if args.split_at is not None or len(args.server or []) > 1:
        return run_split_command(args, name, template, overrides, ProgressPrinter(), started)
    launcher = _comfyui_launcher(args)
    client = ComfyClient(args.server[0] if args.server else DEFAULT_SERVER) if launcher is None else None
    out_dir = prepare_out_dir(Path(args.out))   # before the generation: a bad folder found after it loses the wait
    if client is not None:
        return _run_job(client, name, template, overrides, out_dir, args, started)
    if not Path(args.image).is_file():   # before the server's start-up, which takes minutes
        raise UsageError(f"image {args.image} does not exist")
    with launcher as server:
        try:
            return _run_job(ComfyClient(server.url), name, template, overrides, out_dir, args, started)
        except Exception:
            print(f"last lines of the ComfyUI log ({server.log_path}, kept):\n{server.log_tail()}", file=sys.stderr)
            raise


def _run_job(client: ComfyClient, name: str, template: Mapping[str, Any], overrides: Overrides, out_dir: Path,
             args: argparse.Namespace, started: float) -> int:
    """Runs the filled workflow on ``client``'s server; warns first about settings too slow on a CPU-only one."""
    stats = client.system_stats()
    print(f"wan-accel run: {name} on {mask_secrets(client.base_url)}, seed {overrides.seed}")
    if cpu_only(stats):
        for line in cpu_warnings(fill(template, overrides)):
            print(f"  warning: {line}", file=sys.stderr)
    execution, paths = generate(client, template, overrides, Path(args.image), out_dir, ProgressPrinter(),
                                args.timeout, args.overwrite)
    _print_texts(execution, template, sys.stdout)
    for saved in paths:
        print(f"saved {saved}")
    if not paths:
        print("the workflow produced no output file")
    waited = f", after {execution.queue_seconds:.2f} s in the server's queue" if execution.queue_seconds >= 0.5 else ""
    print(f"wall time {time.monotonic() - started:.2f} s (generation {execution.seconds:.2f} s{waited})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """A batch of image-prompt pairs over one or many servers, resumable, scored like the challenge."""
    name, path = find_workflow(args.workflow)
    template = load_api_workflow(path)
    base = overrides_from(args)
    samples = [dataclasses.replace(s, seed=args.seed if s.seed is None else s.seed) for s in load_pairs(args.pairs)]
    if args.retries < 0:
        raise UsageError(f"--retries {args.retries}: must be 0 or more")
    check_ray_options(args)
    given = args.ray is None or bool(args.server or args.servers)   # servers you run, not ones Ray workers start
    urls = (server_urls(args.server, args.servers) or [DEFAULT_SERVER]) if given else None
    if urls is not None and args.split_at is not None:
        split_pairs(urls)   # an odd count, before any work
    if urls is not None and len(urls) > 1 and args.ray is None:
        require_ray(len(urls))
    out_dir = prepare_out_dir(Path(args.out))   # before any sample: a bad folder found after one loses the wait
    videos = prepare_out_dir(out_dir / "videos", "--out")
    config = {"workflow": name, **{k: v for k, v in dataclasses.asdict(base).items() if v not in (None, {})}}
    if args.split_at is not None:   # a split batch's results are not an unsplit one's: resume never mixes them
        sample_graphs(template, base, None, args.split_at, args.transfer)   # a bad --split-at, before any server
        config.update(split_at=args.split_at, transfer=args.transfer)
    metrics = [METRICS[metric]() for metric in args.metric]
    scorer = bench_scorer(args, out_dir)   # before any sample: a missing weight file is found at once
    if scorer is not None:
        metrics.append(scorer)
    if urls is None or len(urls) > 1 or args.ray is not None:
        return cmd_ray_bench(args, name, template, base, samples, out_dir, videos, config, metrics, urls)
    server = ComfyBenchServer(urls[0], template, base, videos, args.timeout, args.overwrite)
    print(f"wan-accel bench: {name} on {server.name}, {len(samples)} sample(s), results in {out_dir}", flush=True)
    display = BatchDisplay([server.name])
    try:
        summary = run_one_server(samples, server, out_dir / "results.json", config, metrics, display,
                                 retries=args.retries)
    except KeyboardInterrupt:
        print(f"interrupted: the prompt on the server was interrupted; finished samples are saved in "
              f"{out_dir / 'results.json'}; run the same command to resume", file=sys.stderr)
        return 130
    for line in summary.lines():
        display.message(line)
    return 0 if summary.failed == 0 else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    """What is live and what is missing."""
    comfyui = args.comfyui or os.environ.get("COMFYUI_PATH")
    return run_doctor(args.server, Path(comfyui) if comfyui else None)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workflow", default="winner",
                        help=f"{', '.join(WORKFLOWS)} (shipped) or a path to an API-format JSON (default winner)")
    parser.add_argument("--negative", help="negative prompt (default: the workflow's)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the workflow's)")
    parser.add_argument("--width", type=int, help="video width, multiple of 16 (default: the workflow's)")
    parser.add_argument("--height", type=int, help="video height, multiple of 16 (default: the workflow's)")
    parser.add_argument("--length", type=int, help="frames, 4k+1 (default: the workflow's)")
    parser.add_argument("--fps", type=float, help="frame rate of the saved video (default: the workflow's)")
    for role, flag in MODEL_FLAGS.items():
        parser.add_argument(flag, dest=role, metavar="FILE",
                            help=f"{MODEL_HELP.get(role, role.replace('_', ' ') + ' file')} name as the server "
                                 f"lists it (default: the workflow's)")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE", type=parse_setting,
                        help="set any input of the workflow by node id, e.g. --set 9.precision=fp32 (repeatable; "
                             "ids are shown in the progress lines)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a prompt is interrupted")


def build_parser() -> argparse.ArgumentParser:
    """The ``wan-accel`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="wan-accel", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="one image + prompt through a workflow; downloads the video")
    run.add_argument("--server", action="append", metavar="URL",
                     help=f"address of a running ComfyUI (default {DEFAULT_SERVER}); twice with --split-at")
    run.add_argument("--comfyui", metavar="DIR", help="ComfyUI folder to start for this job instead of --server: "
                                                      "headless on a free 127.0.0.1 port, --cpu without a GPU, "
                                                      "stopped after the job")
    run.add_argument("--comfyui-python", metavar="PYTHON",
                     help="interpreter with ComfyUI's requirements that runs --comfyui (default: this Python)")
    run.add_argument("--comfyui-base", metavar="DIR",
                     help="writable folder for the started ComfyUI's models/, input/, output/, custom_nodes/ "
                          "(its --base-directory; default: the --comfyui folder itself)")
    add_split_options(run)
    _add_common(run)
    run.add_argument("--image", required=True, help="start image (uploaded to the server)")
    run.add_argument("--prompt", required=True, help="what happens in the video")
    run.add_argument("--seed", type=int, help="sampler seed (default: random, printed)")
    run.add_argument("--out", default="outputs", help="folder for the downloaded outputs (default outputs)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a file of the same name in --out (default: save under a new name, name-1.mp4)")
    run.set_defaults(handler=cmd_run)

    bench = commands.add_parser("bench", help="a folder or CSV of image-prompt pairs over one or many servers, "
                                              "resumable, with speed score")
    bench.add_argument("--server", action="append", metavar="URL",
                       help=f"address of a ComfyUI you run (default {DEFAULT_SERVER}); repeat it to share the batch "
                            f"between servers: two or more run on Ray, one Ray worker per server (the ray extra)")
    bench.add_argument("--servers", metavar="FILE", help="text file with one ComfyUI address a line (added to "
                                                         "--server)")
    bench.add_argument("--retries", type=int, default=2,
                       help="times a sample runs again when its server stops answering, on another server or on "
                            "the same one once it answers (default 2)")
    _add_common(bench)
    bench.add_argument("--pairs", required=True,
                       help="folder of NAME.png + NAME.txt, or CSV with columns image,prompt[,id,seed,negative]")
    bench.add_argument("--seed", type=int, default=42, help="seed of samples whose CSV row has none (default 42)")
    bench.add_argument("--out", default="bench_out", help="folder for results.json and videos/ (default bench_out)")
    bench.add_argument("--overwrite", action="store_true",
                       help="replace a video of the same name in --out/videos (default: save under a new name)")
    bench.add_argument("--metric", action="append", default=[], choices=sorted(METRICS),
                       help="quality metric to record per sample (repeatable)")
    bench.add_argument("--score", action="store_true",
                       help="score each sample like the challenge as it finishes (the score extra): indices in "
                            "results.json, curves in scores.json; the summary gives the final score")
    add_score_options(bench, prefix="score-")
    add_split_options(bench)
    add_ray_options(bench)
    bench.set_defaults(handler=cmd_bench)

    doctor = commands.add_parser("doctor", help="torch/CUDA/GPU, fp8, triton, sageattention, server, model files")
    doctor.add_argument("--server", default=DEFAULT_SERVER, help=f"ComfyUI address (default {DEFAULT_SERVER})")
    doctor.add_argument("--comfyui", help="ComfyUI folder to look for model files in when the server is down "
                                          "(default $COMFYUI_PATH)")
    doctor.set_defaults(handler=cmd_doctor)
    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wan-accel`` and ``python -m wan_accel``; errors print as one readable message."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except WanAccelError as exc:
        print(f"wan-accel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wan-accel: interrupted (the server's prompt was interrupted too)", file=sys.stderr)
        return 130
