"""Frames to a vision tower's input, and its batches: one rule for every backend.

Resize to the model's square (bicubic, antialiased, rounded back to 8-bit values as an image would be),
rescale and normalise per channel. The rescale divides (by 255), not multiplies by 1/255: bit-identical
to transformers' image processors. No processor class is used (they need torchvision, which the CPU
torch cannot load).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def square_pixels(
    images: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor, rescale: float = 1 / 255
) -> torch.Tensor:
    """images: [F, H, W, 3] uint8 RGB -> pixels [F, 3, size, size] float32 on ``mean``'s device.
    ``mean``/``std``: [1, 3, 1, 1] float32."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(mean.device)
    x = x.permute(0, 3, 1, 2).to(torch.float32)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255)
    return (x / (1.0 / rescale) - mean) / std


def encode_in_batches(
    images: np.ndarray, max_batch: int, encode_batch: Callable[[np.ndarray], np.ndarray], side: int, dim: int
) -> np.ndarray:
    """images: [F, H, W, 3] -> tokens [F, side, side, dim] float32, ``encode_batch`` ([B, H, W, 3] ->
    [B, side * side, dim]) run on at most ``max_batch`` frames at a time."""
    out = [encode_batch(images[i : i + max_batch]) for i in range(0, len(images), max_batch)]
    if not out:
        return np.zeros((0, side, side, dim), np.float32)
    return np.concatenate(out).reshape(len(images), side, side, dim)
