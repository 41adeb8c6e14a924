"""The challenge's formulas as pure functions of features, frames and flows: testable without any network.

Each follows VBench's code (Vchitect/VBench, Apache-2.0): ``vbench2_beta_i2v/i2v_subject.py`` and
``i2v_background.py`` (similarity), ``vbench/motion_smoothness.py``, ``vbench/dynamic_degree.py``,
``vbench/imaging_quality.py``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

#: Weights of the I2V similarity score: best match to the image, mean and worst consecutive-frame match.
MAX_WEIGHT, MEAN_WEIGHT, MIN_WEIGHT = 0.4, 0.3, 0.3
#: The four quality indices that enter the challenge's final score, in its order.
FINAL_INDICES = ("subject", "background", "smoothness", "imaging")


def clamped_similarities(image_feature: np.ndarray, frame_features: np.ndarray) -> tuple[list[float], list[float]]:
    """Cosine similarity of each frame to the image and of each frame to the one before, negatives clamped to 0.

    ``image_feature``: (D,); ``frame_features``: (T, D). Returns ``(to_image, consecutive)``, T and T-1 values.
    """
    image = np.asarray(image_feature, dtype=np.float64).reshape(-1)
    frames = np.asarray(frame_features, dtype=np.float64).reshape(len(frame_features), -1)
    image = image / max(np.linalg.norm(image), 1e-12)
    frames = frames / np.maximum(np.linalg.norm(frames, axis=1, keepdims=True), 1e-12)
    to_image = [max(0.0, float(v)) for v in frames @ image]
    consecutive = [max(0.0, float(np.dot(a, b))) for a, b in zip(frames[:-1], frames[1:])]
    return to_image, consecutive


def i2v_similarity_score(to_image: Sequence[float], consecutive: Sequence[float]) -> float:
    """``0.4·max(to_image) + 0.3·mean(consecutive) + 0.3·min(consecutive)``: the I2V subject and background score of
    one video. Needs at least two frames."""
    if len(to_image) < 2 or len(consecutive) < 1:
        raise ValueError("the I2V similarity score needs a video of at least two frames")
    return (MAX_WEIGHT * max(to_image) + MEAN_WEIGHT * float(np.mean(consecutive))
            + MIN_WEIGHT * min(consecutive))


def smoothness_score(interpolated: np.ndarray, real: np.ndarray) -> float:
    """``(255 − mean |interpolated − real|) / 255`` over uint8 frames: how well the odd frames follow from the even."""
    diff = np.abs(np.asarray(interpolated, dtype=np.float64) - np.asarray(real, dtype=np.float64))
    return (255.0 - float(np.mean(diff))) / 255.0


def dynamic_interval(fps: float) -> int:
    """Frames are sampled every ``round(fps / 8)`` (at least 1) for the dynamic degree."""
    return max(1, round(fps / 8))


def dynamic_threshold(height: int, width: int) -> float:
    """Flow magnitude (px) over which a pair of sampled frames counts as moving: ``6·min(H, W)/256``."""
    return 6.0 * min(height, width) / 256.0


def dynamic_count_needed(sampled_frames: int) -> int:
    """How many moving pairs make a video dynamic: ``round(4·N/16)`` for N sampled frames."""
    return round(4 * (sampled_frames / 16.0))


def top_flow_magnitude(flow: np.ndarray) -> float:
    """Mean of the largest 5 % of a (H, W, 2) flow field's magnitudes (``int(H·W·0.05)`` values)."""
    flow = np.asarray(flow, dtype=np.float64)
    magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).reshape(-1)
    cut = int(magnitude.size * 0.05)
    if cut < 1:
        raise ValueError(f"a flow of {magnitude.size} pixels is too small for its top 5 %")
    return float(np.mean(np.sort(magnitude)[::-1][:cut]))


def is_dynamic(pair_magnitudes: Sequence[float], sampled_frames: int, height: int, width: int) -> bool:
    """True when at least :func:`dynamic_count_needed` pairs move more than :func:`dynamic_threshold`; a video with no
    pair (one sampled frame) is static, as VBench's ``check_move`` of an empty list says."""
    if not pair_magnitudes:
        return False
    threshold = dynamic_threshold(height, width)
    return sum(m > threshold for m in pair_magnitudes) >= dynamic_count_needed(sampled_frames)


def imaging_quality_score(frame_scores: Sequence[float]) -> float:
    """MUSIQ's mean over the frames, divided by 100."""
    if not frame_scores:
        raise ValueError("imaging quality needs at least one frame")
    return float(np.mean(frame_scores)) / 100.0


def final_score(indices: Mapping[str, float], speed: float | None) -> float | None:
    """``0.2 × (subject + background + smoothness + imaging + speed)``; None when an index is missing or the speed is
    invalid (over 600 s)."""
    if speed is None or any(name not in indices or not math.isfinite(indices[name]) for name in FINAL_INDICES):
        return None
    return 0.2 * (sum(indices[name] for name in FINAL_INDICES) + speed)
