"""Qwen2.5-VL as a backend: window-attention ViT -> 2x2 patch merger (LLM space) -> pooling.

Any Qwen2.5-VL checkpoint loads here (a hub id such as ``Qwen/Qwen2.5-VL-7B-Instruct``, a local
directory, or a preset from ``model.presets_qwen25``) through
``Qwen2_5_VLForConditionalGeneration.from_pretrained``.

**What a slot holds.** One keyframe, duplicated in time: the ViT's Conv3d patch spans
``temporal_patch_size`` (2) frames, and this is how Qwen2.5-VL itself encodes a still image. Our
keyframes are ~1 s apart; pairing two of them into one temporal patch would halve the memory's time
resolution and blend two moments into every token, so each slot is one moment, one s x s grid.

**Encoding.** A frame is resized to a square of ``S_MAX * 28`` px (448: 32 x 32 patches of 14 px,
merged 2 x 2 into 16 x 16 tokens), normalised with the checkpoint's mean/std (OpenAI CLIP's),
flattened into patches in the order of ``Qwen2VLImageProcessor.patchify``, and run through
``get_image_features`` with one ``[1, 2s, 2s]`` grid row per frame (a batch is one concatenated
sequence; attention never crosses frames). The merger's output (``pooler_output``, row-major, LLM
width) is the slot grid: pooling happens in the LLM's space and ``to_llm_embeds`` is the identity.

**Prompt.** Qwen2.5-VL's chat template with ``<|vision_start|><|video_pad|><|vision_end|>`` for the
video; in its place each slot becomes ``12s<|vision_start|>`` + its s*s tokens + ``<|vision_end|>``.
Qwen2.5-VL has no per-frame time text of its own (it puts absolute time into the temporal M-RoPE
index of one long video block); here every slot is its own one-patch vision block, so the time is
given as text, as compact as ``model.prompt.slot_label`` makes it (2-6 digit/unit tokens; the
markers delimit it, so no separator is needed). The markers surround every slot even without
time labels: they are part of the model's vision block. ``inputs_embeds`` go with explicit M-RoPE
``position_ids`` (``model.mrope``, each slot a 1 x (2s) x (2s) grid, as ``get_rope_index``);
``generate`` then never computes positions itself, and never reads or writes the model's shared
``rope_deltas``, so concurrent requests on one model are independent. (transformers 5.25: ``generate``
calls ``_prepare_position_ids_for_generation``, the one place that sets ``rope_deltas``, only when no
``position_ids`` are given; each step extends every row by last + 1, which is what the model's own
decoding computes from ``rope_deltas``; the model's forward uses given positions as they are.)

This module knows nothing about Redis, Celery, HTTP, or where frames came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2_5_VLForConditionalGeneration
from transformers.utils import cached_file

from model import compressor
from model.backend import BackendInfo, LoadConfig
from model.families import fingerprint
from model.llava_ov import Normalisation, read_normalisation
from model.mrope import Segment, generate_positions
from model.pixels import encode_in_batches, square_pixels
from model.presets import resolve_model
from model.presets_qwen25 import CLIP_MEAN, CLIP_STD
from model.prompt import (
    Prompt,
    PromptConfig,
    SlotFormat,
    check_layout,
    flat_tokens,
    gap_note_ids,
    label_tokens,
    render_chat,
    slot_label,
    slot_text_ids,
    splice_prompt,
    token_ids,
)
from model.runtime import pick_device, pick_dtype
from model.slots import Slot

S_MAX = 16
"""Native grid side of a slot: 448 px frames, 256 LLM tokens (qwen-vl-utils' video range is 128-768)."""

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
PLACEHOLDER = f"{VISION_START}<|video_pad|>{VISION_END}"
"""What Qwen2.5-VL's chat template renders for a ``{"type": "video"}`` item."""

LABELED = SlotFormat(before=lambda t0: f"{slot_label(t0)}{VISION_START}", after=VISION_END)
"""``12s<|vision_start|>`` ... ``<|vision_end|>`` around each slot."""
MARKERS = SlotFormat(before=lambda t0: VISION_START, after=VISION_END)
"""The vision block's markers alone (``timestamps=False``): 2 tokens per slot."""


def read_qwen_normalisation(path: str) -> Normalisation:
    """The checkpoint's mean/std/rescale; OpenAI CLIP's (Qwen's) when it declares no preprocessor."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if cached_file(path, name, _raise_exceptions_for_missing_entries=False) is not None:
            return read_normalisation(path)
    return Normalisation(mean=CLIP_MEAN, std=CLIP_STD)


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """pixels [B, C, H, W] -> [B * (H/patch) * (W/patch), C * temporal * patch * patch]: each frame
    duplicated ``temporal`` times, flattened as ``Qwen2VLImageProcessor.patchify`` does (merge
    windows in row-major order, each window's patches row-major, a patch as [C, temporal, p, p])."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.reshape(b, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # [B, gh/m, gw/m, m, m, C, p, p]
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)
    return x.reshape(b * gh * gw, c * temporal * patch * patch)


class Qwen25VLBackend:
    """A loaded Qwen2.5-VL checkpoint. Shapes: F frames, side ``s_max`` (16), width ``dim`` (the LLM
    hidden size: 3584 for 7B)."""

    def __init__(self, config: LoadConfig | None = None) -> None:
        self.config = config or LoadConfig()
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.path = resolve_model(self.config.model, self.config.cache_dir)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.path, dtype=self.dtype)
        self.model = model.eval().to(self.device)
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.path)
        self.norm = read_qwen_normalisation(self.path)

        vision = self.model.config.vision_config
        self.patch, self.merge = int(vision.patch_size), int(vision.spatial_merge_size)
        self.temporal = int(vision.temporal_patch_size)
        self.s_max = S_MAX
        self.image_size = S_MAX * self.patch * self.merge
        self.dim = int(self.model.config.text_config.hidden_size)
        if int(vision.out_hidden_size) != self.dim:
            raise ValueError(f"merger width {vision.out_hidden_size} != LLM width {self.dim}")
        self._check_markers()
        self.info = BackendInfo(
            family="qwen2.5-vl",
            fingerprint=fingerprint("qwen2.5-vl", self.path),
            s_max=self.s_max,
            dim=self.dim,
            width=self.dim,
            pool_space="llm",
            positions="mrope",
            image_size=self.image_size,
            label_format="12s<|vision_start|><tokens><|vision_end|>",
        )
        mean = torch.tensor(self.norm.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(self.norm.std, dtype=torch.float32, device=self.device)
        self._mean, self._std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)

    def _check_markers(self) -> None:
        """The tokenizer's vision markers are the ids the model's config names."""
        cfg = self.model.config
        for token, want in ((VISION_START, cfg.vision_start_token_id), (VISION_END, cfg.vision_end_token_id)):
            found = self.tokenizer.convert_tokens_to_ids(token)
            if found != want:
                raise ValueError(f"{token} is id {found} in the tokenizer, {want} in the model config")

    @property
    def lm(self) -> Qwen2_5_VLForConditionalGeneration:
        """The full model, for prompts and generation."""
        return self.model

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """images: [F, H, W, 3] uint8 RGB -> normalised pixels [F, 3, S, S] float32 (S = image_size)."""
        return square_pixels(images, self.image_size, self._mean, self._std, self.norm.rescale)

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """images: [F, H, W, 3] uint8 RGB -> tokens [F, s_max, s_max, dim] float32 (merger output)."""
        return encode_in_batches(images, self.config.max_batch, self._encode_batch, self.s_max, self.dim)

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] uint8 -> [B, s_max * s_max, dim] float32."""
        pixels = patchify(self.preprocess(images), self.patch, self.merge, self.temporal).to(self.dtype)
        side = self.s_max * self.merge  # patches per side
        grid = torch.tensor([[1, side, side]] * len(images), dtype=torch.long, device=self.device)
        out = self.model.model.get_image_features(pixel_values=pixels, image_grid_thw=grid, return_dict=True)
        feats = torch.stack(list(out.pooler_output))
        n = self.s_max * self.s_max
        if tuple(feats.shape) != (len(images), n, self.dim):
            raise RuntimeError(f"image features {tuple(feats.shape)}, expected {(len(images), n, self.dim)}")
        return feats.float().cpu().numpy()

    def pool(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """tokens: [..., s, s, dim] -> [..., side, side, dim] (adaptive average, the paper's compressor)."""
        return compressor.pool(tokens, side)

    def to_llm_embeds(self, tokens: np.ndarray) -> torch.Tensor:
        """tokens: [N, dim] -> [N, dim] on the device: stored in the LLM's space already."""
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens of width {tokens.shape[-1]}, this backend's width is {self.dim}")
        return torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device, self.dtype)

    def label_tokens(self, starts: Sequence[float]) -> list[int]:
        """Tokens of ``12s<|vision_start|>`` + ``<|vision_end|>`` for a slot starting at each time."""
        return label_tokens(self.tokenizer, LABELED, starts)

    def build_prompt(
        self,
        slots: Sequence[Slot],
        question: str,
        cfg: PromptConfig,
        budget: int | None = None,
        gaps: Sequence[tuple[float, float]] = (),
    ) -> Prompt:
        """``inputs_embeds`` and M-RoPE ``position_ids`` [4, 1, L] for ``question`` over ``slots``.

        With ``timestamps=False`` each slot still has its two markers, and they count as its text
        (``text_tokens_per_slot``, the budget check); at native 16x16 slots this is exactly
        transformers' own prompt for one 1-patch video per slot. Raises EmptyMemory, BudgetError."""
        fmt, cfg = self._format(cfg)
        check_layout(slots, cfg, budget)
        visual = self.to_llm_embeds(flat_tokens(slots))
        prompt = splice_prompt(
            self.model, self.tokenizer, visual, slots, question, cfg, fmt, PLACEHOLDER, gaps
        )
        positions = generate_positions(self._segments(slots, question, cfg, fmt, gaps))
        if positions.shape[-1] != prompt.prompt_tokens:
            raise RuntimeError(
                f"{positions.shape[-1]} positions for a prompt of {prompt.prompt_tokens} tokens"
            )
        return dataclasses.replace(prompt, position_ids=positions.to(self.device))

    def _format(self, cfg: PromptConfig) -> tuple[SlotFormat, PromptConfig]:
        """The slot format for ``cfg``; without timestamps, the markers alone, accounted as slot text."""
        if cfg.timestamps:
            return LABELED, cfg
        n_markers = len(token_ids(self.tokenizer, MARKERS.before(0.0) + MARKERS.after))
        return MARKERS, dataclasses.replace(cfg, timestamps=True, text_tokens=n_markers)

    def _segments(
        self,
        slots: Sequence[Slot],
        question: str,
        cfg: PromptConfig,
        fmt: SlotFormat,
        gaps: Sequence[tuple[float, float]],
    ) -> list[Segment]:
        """The prompt as text runs and vision blocks, in the order ``splice_prompt`` lays it out."""
        before, after = render_chat(self.tokenizer, question, cfg, PLACEHOLDER)
        texts = slot_text_ids(self.tokenizer, slots, cfg, fmt)
        notes = gap_note_ids(self.tokenizer, slots, gaps)
        segments: list[Segment] = []
        run = len(token_ids(self.tokenizer, before))
        for slot, note, (b, a) in zip(slots, notes, texts, strict=False):
            segments += [("text", run + len(note) + len(b)), ("vision", slot.side)]
            run = len(a)
        segments.append(("text", run + len(notes[-1]) + len(token_ids(self.tokenizer, after))))
        return segments
