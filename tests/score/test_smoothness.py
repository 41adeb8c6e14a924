"""Motion smoothness: AMT-S loads from AMT's checkpoint format, scores exactly as VBench's own ``motion_score`` does,
and compares each predicted odd frame with the right real one."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vbench.third_party.amt")

from benchmarks.lib.score_weights import write_amt_checkpoint  # noqa: E402
from tests.score.support_flow import panning_frames, write_frame_folder  # noqa: E402
from wan_accel.errors import UsageError  # noqa: E402
from wan_accel.quality import smoothness  # noqa: E402
from wan_accel.quality.formulas import smoothness_score  # noqa: E402
from wan_accel.quality.video_io import Video  # noqa: E402
from wan_accel.quality.weights import MissingWeights  # noqa: E402

HEIGHT, WIDTH = 120, 136        # AMT pads to 128x144: the padding is exercised and every pyramid level is 2 px+


class AveragingInterpolator(torch.nn.Module):
    """The mean of its two inputs (exact for brightness that changes linearly), recording how it was called."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, img0, img1, embt, scale_factor, eval):
        self.calls.append((tuple(img0.shape), float(embt.reshape(-1)[0]), scale_factor, eval))
        return {"imgt_pred": (img0 + img1) / 2}


def averaging_metric() -> smoothness.MotionSmoothness:
    return smoothness.MotionSmoothness(AveragingInterpolator(), "cpu")


def ramp_frames(count: int) -> np.ndarray:
    """A texture whose brightness rises 10 levels a frame."""
    base = panning_frames(1, HEIGHT, WIDTH, step=0, seed=4)[0].astype(np.int64) // 2
    return np.stack([base + 10 * i for i in range(count)]).astype(np.uint8)


@pytest.fixture(scope="module")
def amt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("amt")
    write_amt_checkpoint(folder / "amt-s.pth", seed=0)
    return folder


def test_missing_checkpoint_names_metric_file_size_source_licence_and_folder(tmp_path):
    with pytest.raises(MissingWeights) as err:
        smoothness.load("cpu", tmp_path)
    for part in ("smoothness", "amt-s.pth", "12 MB", "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth",
                 "CC BY-NC 4.0", str(tmp_path)):
        assert part in str(err.value)


def test_loads_amt_s_weights_from_the_state_dict_entry_of_the_checkpoint(tmp_path):
    saved = write_amt_checkpoint(tmp_path / "amt-s.pth", seed=3)
    metric = smoothness.load("cpu", tmp_path)
    assert (metric.name, metric.needs_image, metric.model.training) == ("smoothness", False, False)
    loaded = metric.model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)


def test_agrees_with_vbench_motion_score_on_the_same_weights_and_frames(amt_dir, tmp_path):
    from vbench.motion_smoothness import MotionSmoothness as VBenchMotionSmoothness

    frames = panning_frames(9, HEIGHT, WIDTH, step=2, seed=1)
    folder = write_frame_folder(tmp_path / "frames", frames)
    vbench = VBenchMotionSmoothness(str(smoothness.amt_config_path()), str(amt_dir / "amt-s.pth"), "cpu")
    assert np.array_equal(np.stack(vbench.fp.get_frames_from_img_folder(str(folder))), frames)
    expected = vbench.motion_score(str(folder))
    ours = smoothness.load("cpu", amt_dir).measure(Video(folder, frames, 16.0))
    assert expected < 0.99                       # random weights interpolate badly: the agreement is not trivial
    print(f"\n[agreement] smoothness vs VBench: |difference| {abs(ours.value - expected):.1e}")
    assert ours.value == pytest.approx(expected, abs=1e-6)


def test_static_video_scores_one_less_rounding_and_beats_noise_in_the_odd_frames():
    static = np.repeat(ramp_frames(1), 5, axis=0)
    noisy = static.copy()
    noisy[1::2] = np.random.default_rng(0).integers(0, 256, noisy[1::2].shape, dtype=np.uint8)
    still = averaging_metric().measure(Video(Path("v.mp4"), static, 16.0)).value
    shaken = averaging_metric().measure(Video(Path("v.mp4"), noisy, 16.0)).value
    assert 1.0 - 1.0 / 255.0 <= still <= 1.0     # uint8 -> float -> uint8 truncates by at most 1 level
    assert shaken == pytest.approx(smoothness_score(static[1::2], noisy[1::2]), abs=1.0 / 255.0)
    assert shaken < still - 0.25


def test_even_frames_feed_the_interpolator_and_an_odd_frame_with_no_successor_is_not_compared():
    frames = ramp_frames(8)
    metric = averaging_metric()
    reference = metric.measure(Video(Path("v.mp4"), frames, 16.0)).value
    assert reference >= 1.0 - 1.0 / 255.0
    assert metric.model.calls == [((1, 3, 128, 144), 0.5, 1.0, True)] * 3
    last_odd_changed, compared_odd_changed = frames.copy(), frames.copy()
    last_odd_changed[7] = 0
    compared_odd_changed[5] = 0
    assert averaging_metric().measure(Video(Path("v.mp4"), last_odd_changed, 16.0)).value == reference
    assert averaging_metric().measure(Video(Path("v.mp4"), compared_odd_changed, 16.0)).value < reference - 0.05


@pytest.mark.parametrize("shape", [(2, HEIGHT, WIDTH, 3), (5, 112, WIDTH, 3)])
def test_too_short_or_too_small_a_video_is_a_usage_error_naming_it(shape, tmp_path):
    with pytest.raises(UsageError, match=r"motion smoothness cannot measure .*clip\.mp4.*113 px"):
        averaging_metric().measure(Video(tmp_path / "clip.mp4", np.zeros(shape, np.uint8), 16.0))
