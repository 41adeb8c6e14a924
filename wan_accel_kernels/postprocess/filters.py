"""Separable Gaussian blur and binary morphology on [..., H, W] planes, matching OpenCV's conventions."""
from __future__ import annotations

from functools import lru_cache

import torch

# Outputs per block of the banded-matrix blur: few wasted multiplies, still large enough for an efficient GEMM.
_BLOCK = 32


def gaussian_radius(sigma: float) -> int:
    """Kernel radius for a Gaussian of ``sigma`` pixels: round(3 sigma), at least 1 (99.7 % of the mass)."""
    return max(1, int(3.0 * sigma + 0.5))


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    """Normalised float64 taps of ``cv2.getGaussianKernel(2 * radius + 1, sigma)`` (sigma > 0)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def reflect101(positions: torch.Tensor, n: int) -> torch.Tensor:
    """Source indices in ``0..n-1`` of integer ``positions`` under OpenCV's BORDER_REFLECT_101 (``dcb|abcd|cba``)."""
    if n == 1:
        return torch.zeros_like(positions)
    period = 2 * (n - 1)
    folded = positions.remainder(period)
    return torch.where(folded >= n, period - folded, folded)


def _reflect_padded(x: torch.Tensor, radius: int, height: int, width: int) -> torch.Tensor:
    """[P, height, width] copy of [P, H, W] ``x`` padded by ``radius`` on each side (reflect-101), zeros beyond."""
    planes, rows, cols = x.shape
    r = radius
    if r >= rows or r >= cols:  # tiny image: the pad folds more than once
        row_index = reflect101(torch.arange(-r, rows + r, device=x.device), rows)
        col_index = reflect101(torch.arange(-r, cols + r, device=x.device), cols)
        padded = x.index_select(-2, row_index).index_select(-1, col_index)
        return torch.nn.functional.pad(padded, (0, width - cols - 2 * r, 0, height - rows - 2 * r))
    buf = torch.empty((planes, height, width), dtype=x.dtype, device=x.device)
    buf[:, r : r + rows, r : r + cols] = x
    buf[:, r : r + rows, :r] = x[:, :, 1 : r + 1].flip(-1)
    buf[:, r : r + rows, r + cols : 2 * r + cols] = x[:, :, cols - 1 - r : cols - 1].flip(-1)
    buf[:, :r, : 2 * r + cols] = buf[:, r + 1 : 2 * r + 1, : 2 * r + cols].flip(1)
    buf[:, r + rows : 2 * r + rows, : 2 * r + cols] = buf[:, rows - 1 : r + rows - 1, : 2 * r + cols].flip(1)
    buf[:, :, 2 * r + cols :] = 0
    buf[:, 2 * r + rows :] = 0
    return buf


@lru_cache(maxsize=32)
def _band_matrix(sigma: float, radius: int, device: torch.device) -> torch.Tensor:
    """[_BLOCK + 2r, _BLOCK] matrix, column i holding the Gaussian taps at rows i .. i + 2r: one block of the blur."""
    taps = gaussian_kernel1d(sigma, radius).to(torch.float32)
    band = torch.zeros(_BLOCK + 2 * radius, _BLOCK, dtype=torch.float32)
    for i in range(_BLOCK):
        band[i : i + 2 * radius + 1, i] = taps
    return band.to(device)


def gaussian_blur(planes: torch.Tensor, sigma: float) -> torch.Tensor:
    """Float32 Gaussian blur of [..., H, W], as ``cv2.GaussianBlur`` with ksize 2 * gaussian_radius + 1, reflect-101.

    Both passes are GEMMs against a banded block matrix: each block of 32 outputs reads 32 + 2r padded inputs.
    """
    *lead, height, width = planes.shape
    r = gaussian_radius(sigma)
    band = _band_matrix(float(sigma), r, planes.device)
    row_blocks, col_blocks = -(-height // _BLOCK), -(-width // _BLOCK)
    flat = planes.reshape(-1, height, width).to(torch.float32)
    padded = _reflect_padded(flat, r, row_blocks * _BLOCK + 2 * r, col_blocks * _BLOCK + 2 * r)
    count, padded_rows, _ = padded.shape
    windows = padded.unfold(-1, _BLOCK + 2 * r, _BLOCK).contiguous()
    across = (windows.view(-1, _BLOCK + 2 * r) @ band).view(count, padded_rows, col_blocks * _BLOCK)
    s_plane, s_row, s_col = across.stride()
    row_windows = across.as_strided((count, row_blocks, _BLOCK + 2 * r, col_blocks * _BLOCK),
                                    (s_plane, _BLOCK * s_row, s_row, s_col))
    down = torch.matmul(band.t(), row_windows).view(count, row_blocks * _BLOCK, col_blocks * _BLOCK)
    return down[:, :height, :width].reshape(*lead, height, width)


def _window_reduce(mask: torch.Tensor, dim: int, size: int, dilate: bool) -> torch.Tensor:
    """OR (``dilate``) or AND of a bool mask over a centred ``size`` window along ``dim``, ignoring outside pixels."""
    out = mask.clone()
    n = mask.shape[dim]
    for shift in range(1, min(size // 2, n - 1) + 1):
        for target, source in ((out.narrow(dim, 0, n - shift), mask.narrow(dim, shift, n - shift)),
                               (out.narrow(dim, shift, n - shift), mask.narrow(dim, 0, n - shift))):
            if dilate:
                target.bitwise_or_(source)
            else:
                target.bitwise_and_(source)
    return out


def dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of bool [..., H, W] by a ``size`` x ``size`` square (``cv2.dilate``, default border)."""
    return _window_reduce(_window_reduce(mask, -1, size, True), -2, size, True)


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion of bool [..., H, W] by a ``size`` x ``size`` square (``cv2.erode``, default border)."""
    return _window_reduce(_window_reduce(mask, -1, size, False), -2, size, False)


def morph_open_close(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Opening then closing by a ``size`` x ``size`` square: drops specks, then fills pin-holes (1: identity)."""
    if size <= 1:
        return mask
    opened = dilate(erode(mask, size), size)
    return erode(dilate(opened, size), size)
