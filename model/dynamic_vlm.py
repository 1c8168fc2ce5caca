"""Dynamic-VLM (arXiv 2412.09530, ``Hon-Wong/ByteVideoLLM-14B``) as a backend: the paper's own architecture.

CLIP ViT-L/14-336 (``CLIPVisionModel``; 24x24 = 576 patch tokens per frame, CLS dropped, features
from ``hidden_states[mm_vision_select_layer]``, -2 as LLaVA) -> the compressor's adaptive average
pooling on the 1024-d *vision* features -> LLaVA's ``mlp2x_gelu`` projector -> Qwen2.5
(``Qwen2ForCausalLM``, generating from ``inputs_embeds``). There is no transformers class for it:
``model.dynamic_ckpt`` loads the three parts from one checkpoint directory.

Memory stores the tokens *before* the projector (``dim`` = the tower width, 1024: 5x smaller than
the 14B LLM's 5120), so ``to_llm_embeds`` runs the projector.

The prompt is the paper's, ``"1s: <image>; 2s: <image>; … \\n"`` then the question, in ChatML: each
slot's tokens go between ``"{label}: "`` and ``"; "`` (``DYNAMIC_FORMAT``), the ``"\\n"`` after the last
slot is the template's text after the video placeholder (``PLACEHOLDER``), 1-D positions. The label
is the slot's start in whole seconds, the paper's frame positions at 1 fps (``model.prompt.slot_label``:
minutes from 100000 s, hours from 6000000 s), so a label with its ``"; "`` stays within 10 tokens
(the family's ``text_tokens``). Each text piece is tokenized on its own; the one place where
this differs from tokenizing the whole string is the end: ``"; "`` + ``"\\n"`` are two tokens where
``"; \\n"`` would give ``";"`` + ``" \\n"``.

Frames are resized to 336x336 (bicubic, antialiased, in torch) and normalised with the checkpoint's
mean/std (CLIP's when it ships no ``preprocessor_config.json``).

This module knows nothing about Redis, Celery, HTTP, or where frames came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, Qwen2ForCausalLM

from model import compressor
from model.backend import BackendInfo, LoadConfig
from model.dynamic_ckpt import (
    CLIP_MEAN,
    CLIP_STD,
    PLACEHOLDER,
    geometry,
    load_checkpoint,
    load_tokenizer,
    local_dir,
)
from model.families import fingerprint
from model.pixels import encode_in_batches, square_pixels
from model.presets import resolve_model
from model.prompt import (
    Prompt,
    PromptConfig,
    SlotFormat,
    check_layout,
    flat_tokens,
    label_tokens,
    slot_label,
    splice_prompt,
)
from model.runtime import pick_device, pick_dtype
from model.slots import Slot

DYNAMIC_FORMAT = SlotFormat(before=lambda t0: f"{slot_label(t0)}: ", after="; ")
"""``"12s: "`` before each slot's tokens and ``"; "`` after them (the paper's prompt)."""


def read_mean_std(path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean``/``image_std`` of the checkpoint's preprocessor_config.json; CLIP's when it has none."""
    found = local_dir(path) / "preprocessor_config.json"
    if not found.is_file():
        return CLIP_MEAN, CLIP_STD
    cfg = json.loads(found.read_text())
    return tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))


class DynamicVLMBackend:
    """A loaded Dynamic-VLM checkpoint. Shapes: F frames, native grid ``s_max`` (24 for 336 px /
    patch 14), stored width ``dim`` (the tower's, 1024), LLM width ``llm_hidden`` (5120 for 14B)."""

    def __init__(self, config: LoadConfig | None = None) -> None:
        self.config = config or LoadConfig()
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.path = resolve_model(self.config.model, self.config.cache_dir)
        parts = load_checkpoint(self.path, self.device, self.dtype)
        self.parts = parts
        self.vision, self.projector, self._lm = parts.vision, parts.projector, parts.lm
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(self.path)
        self.image_size, patch = geometry(parts.vision.config)
        self.s_max = self.image_size // patch
        self.dim = int(parts.vision.config.hidden_size)
        self.llm_hidden = int(parts.config.text.hidden_size)
        self.select_layer = parts.config.select_layer
        self.info = BackendInfo(
            family="dynamic-vlm",
            fingerprint=fingerprint("dynamic-vlm", self.path),
            s_max=self.s_max,
            dim=self.dim,
            width=self.dim,
            pool_space="vision",
            positions="1d",
            image_size=self.image_size,
            label_format="12s: <tokens>; ",
        )
        mean, std = read_mean_std(self.path)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @property
    def lm(self) -> Qwen2ForCausalLM:
        """The Qwen2 LLM: the engine generates from the prompt's ``inputs_embeds``."""
        return self._lm

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """images: [F, H, W, 3] uint8 RGB -> pixels [F, 3, S, S] (S = image_size) in the model dtype."""
        return square_pixels(images, self.image_size, self._mean, self._std).to(self.dtype)

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """images: [F, H, W, 3] uint8 RGB -> tokens [F, s_max, s_max, dim] float32 (vision features)."""
        return encode_in_batches(images, self.config.max_batch, self._encode_batch, self.s_max, self.dim)

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] uint8 -> [B, s_max * s_max, dim] float32: the selected layer, CLS dropped."""
        out = self.vision(pixel_values=self.preprocess(images), output_hidden_states=True)
        feats = out.hidden_states[self.select_layer][:, 1:]
        want = (len(images), self.s_max * self.s_max, self.dim)
        if tuple(feats.shape) != want:
            raise RuntimeError(f"vision features {tuple(feats.shape)}, expected {want}")
        return feats.float().cpu().numpy()

    def pool(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """tokens: [..., s, s, dim] -> [..., side, side, dim] (adaptive average, the paper's compressor)."""
        return compressor.pool(tokens, side)

    @torch.no_grad()
    def to_llm_embeds(self, tokens: np.ndarray) -> torch.Tensor:
        """tokens: [N, dim] stored vision features -> [N, llm_hidden] on the device: the projector."""
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens of width {tokens.shape[-1]}, this backend's width is {self.dim}")
        x = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device, self.dtype)
        out: torch.Tensor = self.projector(x)
        return out

    def label_tokens(self, starts: Sequence[float]) -> list[int]:
        """Tokens of ``"12s: "`` and ``"; "`` around a slot starting at each time."""
        return label_tokens(self.tokenizer, DYNAMIC_FORMAT, starts)

    def build_prompt(
        self,
        slots: Sequence[Slot],
        question: str,
        cfg: PromptConfig,
        budget: int | None = None,
        gaps: Sequence[tuple[float, float]] = (),
    ) -> Prompt:
        """``inputs_embeds`` for ``question`` over ``slots``: the paper's prompt in ChatML (see the module
        docstring). Raises EmptyMemory, BudgetError."""
        check_layout(slots, cfg, budget)
        visual = self.to_llm_embeds(flat_tokens(slots))
        return splice_prompt(
            self.lm, self.tokenizer, visual, slots, question, cfg, DYNAMIC_FORMAT, PLACEHOLDER, gaps
        )
