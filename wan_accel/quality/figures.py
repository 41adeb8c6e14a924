"""One PNG per compared sample: the input image, frames at 0/25/50/75/100 % from A and from B, and the per-frame
subject and background similarity to the image of both."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .video_io import crop_to_aspect, read_frames, read_image

FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def frame_indices(count: int) -> list[int]:
    """The frames shown: first, quarter, half, three quarters, last."""
    return [round(f * (count - 1)) for f in FRACTIONS]


def comparison_strip(record_a: Mapping[str, Any], record_b: Mapping[str, Any], name_a: str, name_b: str,
                     out: Path) -> Path:
    """Draws one sample's strip to ``out`` (PNG) and returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    frames = {side: read_frames(Path(r["video"]))[0] for side, r in (("A", record_a), ("B", record_b))}
    image_path = record_a.get("image") or record_b.get("image")
    fig = plt.figure(figsize=(3 * (len(FRACTIONS) + 1), 8.5), layout="constrained")
    grid = fig.add_gridspec(3, len(FRACTIONS) + 1, height_ratios=(1, 1, 1.1))
    for row, side in enumerate(("A", "B")):
        head = fig.add_subplot(grid[row, 0])
        if image_path and Path(image_path).is_file():
            video = frames[side]
            head.imshow(crop_to_aspect(read_image(Path(image_path)), video.shape[2], video.shape[1]))
            head.set_title("input image", fontsize=9)
        head.set_ylabel(name_a if side == "A" else name_b, fontsize=9)
        head.set_xticks([]), head.set_yticks([])
        for col, index in enumerate(frame_indices(len(frames[side])), start=1):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(frames[side][index])
            ax.set_title(f"{side} frame {index}", fontsize=9)
            ax.axis("off")
    curves = fig.add_subplot(grid[2, :])
    for side, record, style in (("A", record_a, "-"), ("B", record_b, "--")):
        for metric in ("subject", "background"):
            values = record.get("curves", {}).get(metric, {}).get("to_image")
            if values:
                curves.plot(np.arange(len(values)), values, style, label=f"{side} {metric}")
    curves.set_xlabel("frame")
    curves.set_ylabel("similarity to the input image")
    curves.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"sample {record_a['id']}", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
