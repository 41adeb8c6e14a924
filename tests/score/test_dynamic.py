"""Dynamic degree: torchvision's RAFT loads from torchvision's file, gives VBench's per-pair flow magnitudes on the same
weights, samples frames every round(fps/8), and counts moving pairs as VBench's ``check_move`` does."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from benchmarks.lib.score_weights import random_raft_state  # noqa: E402
from tests.score.support_flow import original_raft_state_dict, panning_frames, write_frame_folder  # noqa: E402
from wan_accel.errors import UsageError  # noqa: E402
from wan_accel.quality import dynamic  # noqa: E402
from wan_accel.quality.video_io import Video  # noqa: E402
from wan_accel.quality.weights import MissingWeights  # noqa: E402

HEIGHT, WIDTH = 126, 130        # padded to 128x136; VBench's threshold uses the unpadded 126: 2.953 px
THRESHOLD = 6.0 * HEIGHT / 256.0


class KnownFlow(torch.nn.Module):
    """A RAFT stand-in whose flow is uniform with a magnitude from ``magnitude_of(image1, image2)``; records each call's
    input shape, value range, first pixels and flow updates."""

    def __init__(self, magnitude_of):
        super().__init__()
        self.magnitude_of = magnitude_of
        self.calls = []

    def forward(self, image1, image2, num_flow_updates):
        self.calls.append({"shape": tuple(image1.shape), "range": (float(image1.min()), float(image1.max())),
                           "pixels": (float(image1[0, 0, 0, 0]), float(image2[0, 0, 0, 0])),
                           "updates": num_flow_updates})
        flow = torch.zeros(1, 2, *image1.shape[-2:])
        flow[:, 0] = self.magnitude_of(image1, image2)
        return [flow]


def scripted(magnitudes):
    """Flows of the given magnitudes, one per pair in order."""
    queue = iter(magnitudes)
    return dynamic.DynamicDegree(KnownFlow(lambda a, b: next(queue)), "cpu")


def video(frames: np.ndarray, fps: float) -> Video:
    return Video(Path("clip.mp4"), frames, fps)


@pytest.fixture(scope="module")
def raft_dir(tmp_path_factory):
    """Random RAFT weights as torchvision's file and, renamed, as the original ``raft-things.pth``."""
    folder = tmp_path_factory.mktemp("raft")
    state = random_raft_state(seed=0)
    torch.save(state, folder / dynamic.WEIGHTS[0].file)
    torch.save(original_raft_state_dict(state), folder / "raft-things.pth")
    return folder


def test_missing_weights_name_metric_file_size_source_licence_and_folder(tmp_path):
    with pytest.raises(MissingWeights) as err:
        dynamic.load("cpu", tmp_path)
    for part in ("dynamic", "raft_large_C_T_V1-22a6c225.pth", "20.1 MB",
                 "https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth", "BSD-3-Clause", str(tmp_path)):
        assert part in str(err.value)


def test_loads_torchvision_raft_large_state_dict(raft_dir):
    metric = dynamic.load("cpu", raft_dir)
    assert (metric.name, metric.needs_image, metric.model.training) == ("dynamic", False, False)
    saved = torch.load(raft_dir / dynamic.WEIGHTS[0].file, weights_only=True)
    loaded = metric.model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:torch.meshgrid:UserWarning")   # VBench's RAFT code
def test_per_pair_flow_magnitudes_agree_with_vbench_raft_on_the_same_weights(raft_dir, tmp_path):
    from easydict import EasyDict
    from vbench.dynamic_degree import DynamicDegree as VBenchDynamicDegree

    frames = panning_frames(3, HEIGHT, WIDTH, step=3, seed=1)
    folder = write_frame_folder(tmp_path / "frames", frames)
    vbench = VBenchDynamicDegree(EasyDict(model=str(raft_dir / "raft-things.pth"), small=False,
                                          mixed_precision=False, alternate_corr=False), "cpu")
    seen = []
    check_move = vbench.check_move
    vbench.check_move = lambda scores: seen.extend(scores) or check_move(scores)
    expected = vbench.infer(str(folder))
    ours = dynamic.load("cpu", raft_dir).measure(video(frames, 8.0))       # fps 8: every frame, as the folder
    assert len(seen) == 2 and min(seen) > 1.0
    print(f"\n[agreement] dynamic per-pair flow vs VBench: max |difference| "
          f"{np.max(np.abs(np.asarray(ours.curves['flow_top5']) - np.asarray(seen))):.1e}")
    assert np.allclose(ours.curves["flow_top5"], seen, rtol=0, atol=1e-4)
    assert ours.value == float(expected)


def test_raft_gets_padded_frames_in_minus_one_to_one_and_twenty_updates():
    metric = scripted([0.0, 0.0])
    frames = np.full((3, HEIGHT, WIDTH, 3), 255, np.uint8)
    frames[:, :, :, 1] = 0
    metric.measure(video(frames, 8.0))
    assert metric.model.calls[0]["shape"] == (1, 3, 128, 136)
    assert metric.model.calls[0]["range"] == (-1.0, 1.0)
    assert [call["updates"] for call in metric.model.calls] == [20, 20]


@pytest.mark.parametrize("magnitudes, dynamic_value", [
    ([0.0, THRESHOLD + 0.01, 0.0, 0.0, THRESHOLD + 0.01, 0.0, 0.0, 0.0], 1.0),   # 2 of the 2 needed for 9 frames
    ([0.0, THRESHOLD + 0.01, 0.0, 0.0, THRESHOLD - 0.01, 0.0, 0.0, 0.0], 0.0),   # one just under the threshold
    ([THRESHOLD + 5.0] + [0.0] * 7, 0.0),
])
def test_moving_pair_count_and_threshold_match_vbench_check_move(magnitudes, dynamic_value):
    from vbench.dynamic_degree import DynamicDegree as VBenchDynamicDegree

    ours = scripted(magnitudes).measure(video(np.zeros((9, HEIGHT, WIDTH, 3), np.uint8), 8.0))
    vbench = object.__new__(VBenchDynamicDegree)
    vbench.set_params(frame=torch.zeros(1, 3, HEIGHT, WIDTH), count=9)
    assert ours.value == float(vbench.check_move(magnitudes)) == dynamic_value
    assert ours.curves["flow_top5"] == pytest.approx(magnitudes, abs=1e-6)


def test_a_panning_video_is_dynamic_and_a_static_one_is_not_for_flows_that_follow_the_motion():
    difference = lambda a, b: 100.0 * float((a - b).abs().mean())                       # noqa: E731
    panning = panning_frames(9, HEIGHT, WIDTH, step=3, seed=2)
    moving = dynamic.DynamicDegree(KnownFlow(difference), "cpu").measure(video(panning, 8.0))
    still = dynamic.DynamicDegree(KnownFlow(difference), "cpu").measure(video(np.repeat(panning[:1], 9, 0), 8.0))
    assert (moving.value, still.value) == (1.0, 0.0)
    assert min(moving.curves["flow_top5"]) > THRESHOLD and still.curves["flow_top5"] == [0.0] * 8


def test_frames_are_sampled_every_round_fps_over_eight():
    frames = np.stack([np.full((HEIGHT, WIDTH, 3), 10 * i, np.uint8) for i in range(10)])
    metric = scripted([0.0] * 3)
    metric.measure(video(frames, 24.0))
    firsts = [round((call["pixels"][0] + 1) / 2 * 255) for call in metric.model.calls]
    seconds = [round((call["pixels"][1] + 1) / 2 * 255) for call in metric.model.calls]
    assert (firsts, seconds) == ([0, 30, 60], [30, 60, 90])


def test_a_single_sampled_frame_has_no_pair_and_does_not_move_as_in_vbench():
    from vbench.dynamic_degree import DynamicDegree as VBenchDynamicDegree

    metric = scripted([])
    result = metric.measure(video(np.zeros((2, HEIGHT, WIDTH, 3), np.uint8), 24.0))
    vbench = object.__new__(VBenchDynamicDegree)
    vbench.set_params(frame=torch.zeros(1, 3, HEIGHT, WIDTH), count=1)
    assert (result.value, result.curves, metric.model.calls) == (0.0, {"flow_top5": []}, [])
    assert vbench.check_move([]) is False


def test_frames_under_121_px_are_a_usage_error_naming_the_video():
    with pytest.raises(UsageError, match=r"dynamic degree cannot measure clip\.mp4.*121 px"):
        scripted([]).measure(video(np.zeros((3, 120, WIDTH, 3), np.uint8), 8.0))
