"""``wan-accel score`` and ``wan-accel compare``: the challenge's quality score of generated videos, and A/B
comparison of two scored batches. Client side, with the score extra (``pip install 'wan-accel[score]'``)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from .batch.results import write_json_atomic
from .errors import UsageError, WanAccelError
from .quality.compare import check_pairing, compare, comparison_lines, scored_batch
from .quality.jobs import check_jobs, find_jobs
from .quality.registry import weight_specs
from .quality.scores_file import ScoresFile
from .quality.scoring import IMAGE_METRICS, Scorer, parse_metrics, score_table, summarise_scores
from .quality.weights import weights_table


def _weights_dir(args: argparse.Namespace) -> Path | None:
    if args.weights is None:
        return None
    folder = Path(args.weights)
    if not folder.is_dir():
        raise UsageError(f"--weights {folder} is not a folder; put the weight files (wan-accel score --list-weights) "
                         f"in one and pass it")
    return folder


def cmd_score(args: argparse.Namespace) -> int:
    """Scores every video not yet in the scores file; prints the table and where the scores are."""
    names = parse_metrics(args.metrics)
    weights = _weights_dir(args)
    if args.list_weights:
        print("\n".join(weights_table(weight_specs(names), weights)))
        return 0
    if args.videos is None:
        raise UsageError("--videos DIR_OR_RESULTS_JSON is required (or --list-weights)")
    videos = Path(args.videos)
    jobs = find_jobs(videos, Path(args.images) if args.images else None, args.seconds)
    check_jobs(jobs, bool(IMAGE_METRICS & set(names)))
    out = Path(args.out) if args.out else (videos if videos.is_dir() else videos.parent) / "scores.json"
    scores = ScoresFile(out, names)
    todo = [job for job in jobs if not scores.has(job.id)]
    if len(todo) < len(jobs):
        print(f"resuming: {len(jobs) - len(todo)} video(s) already scored in {out} are kept", file=sys.stderr)
    failed = 0
    if todo:
        from tqdm import tqdm

        scorer = Scorer(names, args.device, weights)
        print(f"wan-accel score: {len(todo)} video(s), metrics {', '.join(names)}, on {scorer.device}",
              file=sys.stderr)
        for job in tqdm(todo, desc="scoring", unit="video", file=sys.stderr):
            try:
                scores.add(scorer.score(job))
            except WanAccelError as exc:
                failed += 1
                tqdm.write(f"sample {job.id}: {exc}", file=sys.stderr)
    records = [scores.records[job.id] for job in jobs if job.id in scores.records]
    if records:
        print("\n".join(score_table(records, summarise_scores(records))))
    print(f"scores saved in {out}")
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Paired comparison of two scored batches, a JSON of it and one PNG strip per paired sample."""
    folder_a, folder_b = Path(args.a), Path(args.b)
    records_a, samples_a = scored_batch(folder_a)
    records_b, samples_b = scored_batch(folder_b)
    if args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples}: use at least 100 for a 95 % interval")
    result = compare(records_a, records_b, args.resamples, top=args.top)
    check_pairing(result.samples, samples_a, samples_b)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("\n".join(comparison_lines(result, str(folder_a), str(folder_b))))
    write_json_atomic(out / "compare.json", {"a": str(folder_a), "b": str(folder_b), **asdict(result)})
    if not args.no_figures:
        from .quality.figures import comparison_strip

        for sample_id in result.samples:
            comparison_strip(records_a[sample_id], records_b[sample_id], folder_a.name, folder_b.name,
                             out / "figures" / f"{sample_id}.png")
        print(f"figures: {out / 'figures'} ({len(result.samples)} PNG)")
    print(f"comparison saved in {out / 'compare.json'}")
    return 0


def add_score_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--metrics``, ``--weights`` and ``--device``, shared by ``score`` and ``bench --score``."""
    parser.add_argument(f"--{prefix}metrics", dest="metrics", metavar="LIST",
                        help="comma-separated: subject,background,smoothness,imaging,dynamic (default: all five)")
    parser.add_argument("--weights", metavar="DIR", help="folder with the metrics' weight files (default: each "
                                                         "library's own cache; see score --list-weights)")
    parser.add_argument(f"--{prefix}device", dest="device", default="auto",
                        help="where scoring runs: auto (a CUDA GPU when there is one), cpu, cuda, cuda:1")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds ``score`` and ``compare`` to the ``wan-accel`` parser."""
    score = commands.add_parser("score", help="the challenge's quality indices and final score of generated videos")
    score.add_argument("--videos", metavar="DIR_OR_RESULTS_JSON",
                       help="a folder of videos, or a bench's results.json (its videos, images and times)")
    score.add_argument("--images", metavar="DIR", help="input images for a folder of videos: NAME.png for NAME.mp4")
    score.add_argument("--seconds", type=float, help="generation seconds per video, for the speed and final score")
    score.add_argument("--out", metavar="FILE", help="scores file (default: scores.json beside the videos or "
                                                     "results.json); videos already in it are kept (resume)")
    score.add_argument("--list-weights", action="store_true", help="print each weight file, where it comes from and "
                                                                   "whether it is present, then stop")
    add_score_options(score)
    score.set_defaults(handler=cmd_score)

    comp = commands.add_parser("compare", help="A/B: two scored batches from the same pairs and seeds")
    comp.add_argument("a", help="result folder A (with scores.json), e.g. the winner workflow's bench --out")
    comp.add_argument("b", help="result folder B (with scores.json), e.g. the turbo workflow's")
    comp.add_argument("--out", default="compare_out", help="folder for compare.json and figures/ (default "
                                                           "compare_out)")
    comp.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    comp.add_argument("--top", type=int, default=5, help="how many most-moved samples to list (default 5)")
    comp.add_argument("--no-figures", action="store_true", help="skip the PNG strip per sample")
    comp.set_defaults(handler=cmd_compare)


def bench_scorer(args: argparse.Namespace, out_dir: Path):
    """For ``bench --score``: the scorer, built before the first sample so a missing weight file or package is
    found at once (None without ``--score``)."""
    if not args.score:
        return None
    from .quality.bench_score import BenchScore

    names = parse_metrics(args.metrics)
    scores = ScoresFile(out_dir / "scores.json", names)
    return BenchScore(Scorer(names, args.device, _weights_dir(args)), scores)

