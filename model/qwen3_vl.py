"""Qwen3-VL as a Backend: ViT (with DeepStack) -> merger, pooled in the LLM's space, M-RoPE prompt.

Any Qwen3-VL checkpoint loads here (``Qwen/Qwen3-VL-8B-Instruct``, a local directory, or a preset
from ``model.presets_qwen3``) through ``Qwen3VLForConditionalGeneration.from_pretrained`` (a Qwen3.5
checkpoint through its own class, see below).

**What a slot holds.** One keyframe, duplicated in time: Qwen3-VL's patch embedding is a Conv3d over
``temporal_patch_size`` (2) frames, and its processors turn a still image into a temporal patch by
repeating it (and pad an odd video with its last frame). A slot is thus one temporal patch, exactly
one ``video_grid_thw`` row [1, 2s, 2s] and one time label in Qwen3-VL's own video prompt, and the
memory's per-frame times, merges and labels stay those of single frames. (Pairing two frames per
patch would halve the encoder's work but make every slot span two sampled times.)

**Encode.** Frames are resized (squashed, as every slot must be one s×s grid for pooling and merging,
keeping the whole field of view) to a square of ``S_MAX * patch_size * spatial_merge_size`` px (16 ×
32 = 512 px: 32×32 patches of 16 px, merged 2×2 into 16×16 = 256 tokens), rescaled and normalised
with the checkpoint's preprocessor mean/std (0.5/0.5 for Qwen3-VL), duplicated in time and flattened
in the processor's patch order (``patchify``), and run through ``model.model.get_video_features``
with one grid row per frame (the ViT attends within each frame only). Its ``pooler_output`` (the
merger's output, in the LLM's width and row-major) and its DeepStack features (the outputs of ViT
blocks ``deepstack_visual_indexes`` through their own mergers, which the LLM adds to its hidden
states at the visual positions after decoder layers 0, 1, 2, …) are stacked on the channel axis:
tokens [F, s, s, hidden × (1 + n_deepstack)]. The memory pools and merges every level alike.

**Cost of DeepStack.** Storage grows by (1 + n_deepstack)×. Qwen3-VL-8B (hidden 4096, 3 DeepStack
levels) stores 4 × 4096 values a token: 32 KiB in fp16, so a native 16×16 slot takes 8 MiB (2 MiB
for the main grid alone) and a side-11 slot 3.8 MiB; 2B/4B (hidden 2048/2560) store half/five-eighths.

**Prompt.** ``model.qwen3_vl_prompt``: Qwen3-VL's per-temporal-patch video layout with compact labels
(``"<12 seconds>"``), token ids + ``mm_encoder_outputs`` + explicit M-RoPE positions.

**Qwen3.5** (``transformers.models.qwen3_5``, transformers 5.25) has the same scheme: the same vision
tower (patch 16, merge 2, temporal 2, the same interpolated position grid), the same processor
(``Qwen3VLProcessor``/``Qwen3VLVideoProcessor``: the same per-temporal-patch video prompt) and the
same ``get_rope_index`` (one grid row per timestamped patch); it differs in having no DeepStack
(``get_video_features`` returns a plain ``BaseModelOutputWithPooling``), a hybrid LLM (Gated
DeltaNet + full attention, mrope_section [11, 11, 10], partial rotary), its own vocabulary (video
token 248057) and its class ``Qwen3_5ForConditionalGeneration``. This backend loads it too: the
class is chosen by ``model_type`` (``CLASSES``), ``levels`` is 1 without DeepStack and token ids are
read from the config; a tiny Qwen3.5 checkpoint gives transformers' own logits exactly
(tests/model/test_qwen3_vl.py); ``model.families`` names it ``qwen3.5``, with Qwen3-VL's defaults.
The MoE variants (``qwen3_vl_moe``, ``qwen3_5_moe``) share the
scheme but are not listed nor tested.

This module knows nothing about Redis, Celery, HTTP, or where frames came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
)

from model import compressor
from model.backend import BackendInfo, LoadConfig
from model.families import fingerprint
from model.llava_ov import read_normalisation
from model.pixels import encode_in_batches, square_pixels
from model.presets import resolve_model
from model.prompt import Prompt, PromptConfig, check_layout, flat_tokens, label_tokens
from model.qwen3_vl_prompt import QWEN3_SLOT, video_prompt
from model.runtime import pick_device, pick_dtype
from model.slots import Slot

CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "qwen3_5": Qwen3_5ForConditionalGeneration,
}
"""The model class of each ``model_type`` served here."""
FAMILIES = {"qwen3_vl": "qwen3-vl", "qwen3_5": "qwen3.5"}
"""The family (``BackendInfo.family``, fingerprint prefix) of each ``model_type`` served here."""

S_MAX = 16
"""Native grid side of a frame in the memory: 16×16 = 256 tokens (512 px), within the 128..768
tokens per frame that qwen-vl-utils gives Qwen3-VL video frames."""


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """pixels [F, 3, S, S] -> [F * g * g, 3 * temporal * patch²] (g = S / patch): each frame repeated
    ``temporal`` times and flattened as Qwen3-VL's video processor (``Qwen2VL``'s order) does, patches
    grouped by merge window (row-major windows, row-major patches inside), channel-time-row-column
    inside a patch."""
    f, c, size, _ = pixels.shape
    g = size // patch
    video = pixels[:, None].expand(f, temporal, c, size, size)
    blocks = video.reshape(f, temporal, c, g // merge, merge, patch, g // merge, merge, patch)
    blocks = blocks.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return blocks.reshape(f * g * g, c * temporal * patch * patch)


class Qwen3VLBackend:
    """A loaded Qwen3-VL checkpoint. Shapes: F frames, native side ``S_MAX``, level width ``width`` (the
    LLM hidden size), stored width ``dim = width * levels`` (levels: the main grid + DeepStack)."""

    def __init__(self, config: LoadConfig | None = None) -> None:
        self.config = config or LoadConfig()
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.path = resolve_model(self.config.model, self.config.cache_dir)
        checkpoint = AutoConfig.from_pretrained(self.path)
        if checkpoint.model_type not in CLASSES:
            raise ValueError(f"model_type {checkpoint.model_type!r} is not Qwen3-VL or Qwen3.5")
        model = CLASSES[checkpoint.model_type].from_pretrained(self.path, config=checkpoint, dtype=self.dtype)
        self.model = model.eval().to(self.device)
        family = FAMILIES[checkpoint.model_type]
        self._tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.path)
        self.norm = read_normalisation(self.path)

        vision = self.model.config.vision_config
        self.patch, self.merge = int(vision.patch_size), int(vision.spatial_merge_size)
        self.temporal = int(vision.temporal_patch_size)
        self.s_max = S_MAX
        self.image_size = S_MAX * self.patch * self.merge
        self.width = int(self.model.config.text_config.hidden_size)
        self.levels = 1 + len(getattr(vision, "deepstack_visual_indexes", None) or ())
        self.dim = self.width * self.levels
        self.video_token_id = int(self.model.config.video_token_id)
        if int(vision.out_hidden_size) != self.width:
            raise ValueError(f"vision out_hidden_size {vision.out_hidden_size} != LLM hidden {self.width}")
        self.info = BackendInfo(
            family=family,
            fingerprint=fingerprint(family, self.path),
            s_max=self.s_max,
            dim=self.dim,
            width=self.width,
            pool_space="llm",
            positions="mrope",
            image_size=self.image_size,
            levels=self.levels,
            label_format="<12 seconds><|vision_start|><tokens><|vision_end|>",
        )
        mean = torch.tensor(self.norm.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(self.norm.std, dtype=torch.float32, device=self.device)
        self._mean, self._std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def lm(self) -> PreTrainedModel:
        """The full model, for prompts and generation."""
        return self.model

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """images: [F, H, W, 3] uint8 RGB -> pixels [F, 3, S, S] float32 (S = image_size), normalised."""
        return square_pixels(images, self.image_size, self._mean, self._std, self.norm.rescale)

    def pixel_values(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """images [F, H, W, 3] uint8 -> (pixel_values_videos [F * 4s², 3 * 2 * 16²] in the model dtype,
        video_grid_thw [F, 3]: one row [1, 2s, 2s] per frame), as the video processor gives them."""
        pixels = patchify(self.preprocess(images), self.patch, self.merge, self.temporal)
        g = self.image_size // self.patch
        grid = torch.tensor([[1, g, g]] * len(images), dtype=torch.long, device=self.device)
        return pixels.to(self.dtype), grid

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """images: [F, H, W, 3] uint8 RGB -> tokens [F, s_max, s_max, dim] float32 (main grid, then
        each DeepStack level, on the channel axis)."""
        return encode_in_batches(images, self.config.max_batch, self._encode_batch, self.s_max, self.dim)

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] uint8 -> [B, s_max * s_max, dim] float32."""
        pixels, grid = self.pixel_values(images)
        out = self.model.model.get_video_features(pixels, grid, return_dict=True)
        deepstack = getattr(out, "deepstack_features", None) or []  # Qwen3.5: none
        levels = [torch.cat(out.pooler_output), *(torch.cat(f) for f in deepstack)]
        n = len(images) * self.s_max * self.s_max
        shapes = {tuple(x.shape) for x in levels}
        if shapes != {(n, self.width)} or len(levels) != self.levels:
            raise RuntimeError(
                f"video features {shapes} x {len(levels)}, expected {(n, self.width)} x {self.levels}"
            )
        stacked = torch.cat(levels, dim=-1).float().cpu().numpy()
        return stacked.reshape(len(images), self.s_max * self.s_max, self.dim)

    def pool(self, tokens: np.ndarray, side: int) -> np.ndarray:
        """tokens: [..., s, s, dim] -> [..., side, side, dim] (adaptive average, every level alike)."""
        return compressor.pool(tokens, side)

    def llm_levels(self, tokens: np.ndarray) -> torch.Tensor:
        """tokens: [N, dim] -> [levels, N, width] on the device, in the model dtype: the main grid's
        embeddings, then each DeepStack level (what the LLM adds after decoder layer 0, 1, …)."""
        if tokens.ndim != 2 or tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens of shape {tokens.shape}, this backend stores [N, {self.dim}]")
        x = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device, self.dtype)
        return x.view(len(tokens), self.levels, self.width).transpose(0, 1)

    def to_llm_embeds(self, tokens: np.ndarray) -> torch.Tensor:
        """tokens: [N, dim] -> [N, width]: the embeddings that take the tokens' place in the prompt (the
        DeepStack levels, which the LLM adds inside, come from ``llm_levels``)."""
        return self.llm_levels(tokens)[0]

    def label_tokens(self, starts: Sequence[float]) -> list[int]:
        """Tokens of ``<12 seconds><|vision_start|>`` + ``<|vision_end|>`` for slots starting at each time."""
        return label_tokens(self.tokenizer, QWEN3_SLOT, starts)

    def build_prompt(
        self,
        slots: Sequence[Slot],
        question: str,
        cfg: PromptConfig,
        budget: int | None = None,
        gaps: Sequence[tuple[float, float]] = (),
    ) -> Prompt:
        """Token ids, M-RoPE positions and the slots' features (main + DeepStack) for ``question`` over
        ``slots``; at native 16×16 slots with the same time text this is Qwen3-VL's own video prompt.
        Raises EmptyMemory, BudgetError."""
        check_layout(slots, cfg, budget)
        levels = self.llm_levels(flat_tokens(slots))
        return video_prompt(self.tokenizer, slots, question, cfg, levels, self.video_token_id, gaps)
