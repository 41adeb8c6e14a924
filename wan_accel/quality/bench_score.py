"""``wan-accel bench --score``: each finished sample is scored on the client while the server makes the next one.

The indices go into the sample's ``metrics`` in ``results.json``; the whole record, curves included, into the
batch's ``scores.json`` (what ``wan-accel compare`` reads).
"""
from __future__ import annotations

from ..batch.samples import JobOutcome, Sample, first_video
from .jobs import ScoreJob
from .scores_file import ScoresFile
from .scoring import Scorer


class BenchScore:
    """A :class:`~wan_accel.batch.samples.QualityMetric` that gives several values: the challenge's indices of one sample."""

    name = "score"

    def __init__(self, scorer: Scorer, scores: ScoresFile):
        self.scorer, self.scores = scorer, scores
        self.seconds: dict[str, float] = {}

    def unavailable_reason(self) -> str | None:
        """Always available: the scorer was built (weights checked, networks loaded) before the batch started."""
        return None

    def measure(self, sample: Sample, outcome: JobOutcome) -> dict[str, float]:
        """Scores the sample's video; records it in ``scores.json`` and returns its indices."""
        video = first_video(outcome.outputs)
        if video is None:
            raise ValueError("no video among the outputs")
        record = self.scorer.score(ScoreJob(sample.id, video, sample.image, round(outcome.seconds, 3)))
        self.scores.add(record)
        return dict(record["indices"])
