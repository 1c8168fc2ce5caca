"""M-RoPE positions (``model.mrope``) against Qwen2.5-VL's own ``get_rope_index`` on random layouts."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

from model.mrope import Segment, generate_positions, mrope_positions


@pytest.fixture(scope="module")
def qwen25() -> Qwen2_5_VLModel:
    """A tiny Qwen2.5-VL (only its config and ``get_rope_index`` are used)."""
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        image_token_id=60,
        video_token_id=61,
        vision_start_token_id=62,
        vision_end_token_id=63,
    )
    return Qwen2_5_VLModel(config).eval()


def random_layout(rng: random.Random) -> list[Segment]:
    """Text runs (at least one token between two vision blocks, as the markers guarantee) and
    vision blocks of side 1..6."""
    segments: list[Segment] = [("text", rng.randint(0, 5))]
    for _ in range(rng.randint(1, 5)):
        segments += [("vision", rng.randint(1, 6)), ("text", rng.randint(1, 5))]
    return segments


def rope_index_of(
    model: Qwen2_5_VLModel, segments: list[Segment], rng: random.Random
) -> tuple[torch.Tensor, int]:
    """``get_rope_index`` for the layout, each block an image or a 1-patch video at any frame rate:
    ([3, L] positions, the delta it keeps for decoding)."""
    kinds: list[int] = []
    grids, videos, seconds = [], [], []
    for kind, n in segments:
        if kind == "text":
            kinds += [0] * n
            continue
        modality = rng.choice([1, 2])
        kinds += [modality] * (n * n)
        (videos if modality == 2 else grids).append([1, 2 * n, 2 * n])
        if modality == 2:
            seconds.append(rng.uniform(0.1, 3.0))
    mm = torch.tensor([kinds], dtype=torch.int)
    ids = torch.where(mm == 0, 1, torch.where(mm == 1, 60, 61)).long()
    positions, deltas = model.get_rope_index(
        ids,
        mm,
        image_grid_thw=torch.tensor(grids) if grids else None,
        video_grid_thw=torch.tensor(videos) if videos else None,
        second_per_grid_ts=torch.tensor(seconds) if seconds else None,
    )
    return positions[:, 0], int(deltas[0, 0])


@pytest.mark.parametrize("seed", range(25))
def test_positions_equal_get_rope_index(qwen25: Qwen2_5_VLModel, seed: int) -> None:
    rng = random.Random(seed)
    segments = random_layout(rng)
    expected, delta = rope_index_of(qwen25, segments, rng)
    ours = mrope_positions(segments)
    assert torch.equal(ours, expected)
    # generate continues every row by last + 1; the model's own decoding uses text position + delta.
    length = ours.shape[1]
    assert torch.equal(ours[:, -1] + 1, torch.full((3,), length + delta))


def test_generate_positions_prepend_a_text_row() -> None:
    segments: list[Segment] = [("text", 3), ("vision", 2), ("text", 2)]
    out = generate_positions(segments)
    assert out.shape == (4, 1, 9)
    assert torch.equal(out[0, 0], torch.arange(9))
    assert torch.equal(out[1:, 0], mrope_positions(segments))
    assert out[1:, 0, 3:7].tolist() == [[3, 3, 3, 3], [3, 3, 4, 4], [3, 4, 3, 4]]
    assert out[1:, 0, 7].tolist() == [5, 5, 5]


def test_empty_and_unknown_segments() -> None:
    assert mrope_positions([]).shape == (3, 0)
    assert mrope_positions([("text", 0)]).shape == (3, 0)
    with pytest.raises(ValueError, match="unknown segment kind"):
        mrope_positions([("audio", 2)])
