"""Qwen's multimodal RoPE positions (M-RoPE) for a prompt of text runs and s×s vision blocks.

The rules of ``get_rope_index`` in Qwen2-VL, Qwen2.5-VL and Qwen3-VL, for the layout vidmem builds
(every slot one temporal patch, t = 1, placed as a 1×(2s)×(2s) grid of patches that the model's 2×2
merge turns into s×s tokens):

* a text token at position p has (p, p, p), and the next one p + 1;
* a vision block starting at p has t = p, h = p + i, w = p + j for its token (i, j) in row-major
  order; the text after it starts at p + s (the block's largest index plus one).

With one temporal patch per block, Qwen2.5-VL's time scaling (``second_per_grid_t *
tokens_per_second``) multiplies t index 0, so it changes nothing: the rules of both generations agree.

``generate`` takes [4, 1, L]: a plain text row (0..L-1) first, then t, h, w. Passed explicitly, they
are carried forward per request, so no request relies on the model's shared ``rope_deltas``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Segment = tuple[str, int]
"""("text", n tokens) or ("vision", side s: s*s tokens)."""


def mrope_positions(segments: Sequence[Segment]) -> torch.Tensor:
    """[3, L] long: the t, h, w position of every token of the prompt, in order."""
    parts: list[torch.Tensor] = []
    p = 0
    for kind, n in segments:
        if kind == "text":
            parts.append(torch.arange(p, p + n).expand(3, n))
            p += n
        elif kind == "vision":
            i = torch.arange(n).repeat_interleave(n)
            j = torch.arange(n).repeat(n)
            parts.append(torch.stack([torch.full((n * n,), p), p + i, p + j]))
            p += n
        else:
            raise ValueError(f"unknown segment kind {kind!r}")
    return torch.cat(parts, dim=1) if parts else torch.zeros((3, 0), dtype=torch.long)


def generate_positions(segments: Sequence[Segment]) -> torch.Tensor:
    """[4, 1, L] long, as ``generate`` takes them: a text row 0..L-1, then t, h, w."""
    thw = mrope_positions(segments)
    text = torch.arange(thw.shape[1]).unsqueeze(0)
    return torch.cat([text, thw]).unsqueeze(1)
