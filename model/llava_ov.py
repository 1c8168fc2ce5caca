"""LLaVA-OneVision as a VisionBackend: SigLIP tower -> projector -> bilinear pooling.

Any LLaVA-OneVision checkpoint loads here (a hub id such as
``llava-hf/llava-onevision-qwen2-0.5b-ov-hf``, a local directory, or a preset name from
``model.presets``) through ``LlavaOnevisionForConditionalGeneration.from_pretrained``. LLaVA-Video
(``llava-hf/LLaVA-Video-7B-Qwen2-hf``) is the same class and loads here too.

The prompt is LLaVA-OV's video prompt (``<video>`` in ChatML) with ``"12s: "`` before each slot's
tokens and one ``image_newline`` after the last, 1-D positions.

Pooling happens *after* the projector in LLaVA-OV, so the token grid ``encode`` returns is
already in the LLM's embedding space: ``dim`` is the LLM width and ``to_llm_embeds`` is the
identity. ``encode`` runs the model's own video-feature path (vision tower at
``vision_feature_layer`` with its select strategy, projector, ``apply_pooling``: 27x27 ->
14x14), one frame per video, so its tokens are exactly what transformers splices into a prompt.

Preprocessing is done here, not by the processor class (which needs torchvision): resize to
``image_size`` when needed (bicubic, antialiased), rescale by 1/255 and normalise with the
checkpoint's mean/std (SigLIP's 0.5/0.5 when it declares none).

This module knows nothing about Redis, Celery, HTTP, or where frames came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerBase
from transformers.utils import cached_file

from model import compressor
from model.backend import BackendInfo, LoadConfig
from model.families import fingerprint
from model.pixels import encode_in_batches, square_pixels
from model.presets import resolve_model
from model.presets_llava import SIGLIP_MEAN, SIGLIP_STD
from model.prompt import (
    LABEL_COLON,
    Prompt,
    PromptConfig,
    check_layout,
    flat_tokens,
    label_tokens,
    splice_prompt,
)
from model.runtime import pick_device, pick_dtype
from model.slots import Slot


@dataclass(frozen=True, slots=True)
class Normalisation:
    """Pixel normalisation: ``(x * rescale - mean) / std`` per RGB channel."""

    mean: tuple[float, float, float] = SIGLIP_MEAN
    std: tuple[float, float, float] = SIGLIP_STD
    rescale: float = 1 / 255


def read_normalisation(path: str) -> Normalisation:
    """The checkpoint's video (else image) preprocessor mean/std/rescale; SigLIP defaults if none."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        found = cached_file(path, name, _raise_exceptions_for_missing_entries=False)
        if found is None:
            continue
        cfg = json.loads(Path(found).read_text())
        mean = cfg.get("image_mean", SIGLIP_MEAN)
        std = cfg.get("image_std", SIGLIP_STD)
        return Normalisation(
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
            rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
        )
    return Normalisation()


class LlavaOVBackend:
    """A loaded LLaVA-OneVision checkpoint (vision side for ``encode``, LLM side for answers).

    Shapes: F frames, native pooled grid ``s_max`` (14 for 384 px / patch 14), width ``dim``
    (the LLM hidden size: 896 for 0.5B, 3584 for 7B).
    """

    def __init__(self, config: LoadConfig | None = None) -> None:
        self.config = config or LoadConfig()
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.path = resolve_model(self.config.model, self.config.cache_dir)
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(self.path, dtype=self.dtype)
        self.model = model.eval()
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.path)
        self.norm = read_normalisation(self.path)

        vision = self.model.config.vision_config
        self.image_size: int = int(vision.image_size)
        self.grid: int = self.image_size // int(vision.patch_size)
        self.s_max: int = math.ceil(self.grid / 2)
        self.dim: int = int(self.model.config.text_config.hidden_size)

        self.info = BackendInfo(
            family="llava-ov",
            fingerprint=fingerprint("llava-ov", self.path),
            s_max=self.s_max,
            dim=self.dim,
            width=self.dim,
            pool_space="llm",
            positions="1d",
            image_size=self.image_size,
            label_format="12s: <tokens>",
        )
        self.model.to(self.device)
        self.image_newline: np.ndarray = self.model.model.image_newline.detach().float().cpu().numpy()
        """[dim] float32: appended once after all frames of a video, as LLaVA-OV does."""
        mean = torch.tensor(self.norm.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(self.norm.std, dtype=torch.float32, device=self.device)
        self._mean, self._std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)

    @property
    def lm(self) -> LlavaOnevisionForConditionalGeneration:
        """The full model, for prompts and generation."""
        return self.model

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """images: [F, H, W, 3] uint8 RGB -> pixels [F, 3, S, S] (S = image_size) in the model dtype."""
        return square_pixels(images, self.image_size, self._mean, self._std, self.norm.rescale).to(self.dtype)

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """images: [F, H, W, 3] uint8 RGB -> tokens [F, s_max, s_max, dim] float32 (pooled, projected)."""
        return encode_in_batches(images, self.config.max_batch, self._encode_batch, self.s_max, self.dim)

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] uint8 -> [B, s_max * s_max, dim] float32."""
        pixels = self.preprocess(images)
        # Each frame as a one-frame video: features [B, s*s + 1, D], the last row is image_newline.
        out = self.model.model.get_video_features(pixel_values_videos=pixels[:, None], return_dict=True)
        feats = out.pooler_output
        n = self.s_max * self.s_max
        if tuple(feats.shape) != (len(images), n + 1, self.dim):
            raise RuntimeError(
                f"video features {tuple(feats.shape)}, expected {(len(images), n + 1, self.dim)}"
            )
        return feats[:, :n].float().cpu().numpy()

    def pool(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """tokens: [..., s, s, dim] -> [..., side, side, dim] (adaptive average, the paper's compressor)."""
        return compressor.pool(tokens, side)

    def to_llm_embeds(self, tokens: np.ndarray) -> torch.Tensor:
        """tokens: [N, dim] -> [N, dim] on the device: as stored, LLaVA-OV pools after the projector."""
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens of width {tokens.shape[-1]}, this backend's width is {self.dim}")
        return torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device, self.dtype)

    def label_tokens(self, starts: Sequence[float]) -> list[int]:
        """Tokens of ``"12s: "`` for a slot starting at each time."""
        return label_tokens(self.tokenizer, LABEL_COLON, starts)

    def build_prompt(
        self,
        slots: Sequence[Slot],
        question: str,
        cfg: PromptConfig,
        budget: int | None = None,
        gaps: Sequence[tuple[float, float]] = (),
    ) -> Prompt:
        """``inputs_embeds`` for ``question`` over ``slots``; with ``timestamps=False`` and native 14x14
        slots this is exactly transformers' own video prompt. Raises EmptyMemory, BudgetError."""
        check_layout(slots, cfg, budget)
        visual = self.to_llm_embeds(flat_tokens(slots))
        newline = torch.from_numpy(self.image_newline)
        return splice_prompt(
            self.model, self.tokenizer, visual, slots, question, cfg, LABEL_COLON, "<video>", gaps, newline
        )
