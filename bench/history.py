"""Long histories, fast-forwarded: answer time, Redis bytes and label share at 1 min, 1 h and 24 h of stream.

A handful of real frames is encoded once; a history of N seconds (1 fps) is then N
``EncodedFrame`` values cycling those token grids (seq = t = 0 .. N-1), appended to a
``TokenMemory`` in large batches, so the memory goes through exactly the re-pooling and
temporal merging a real stream of that length causes. Answers go through the worker's own
path: ``TokenMemory.state(with_tokens=True)`` then ``answerer_for(...).answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import keys_bytes, log, median, timed
from model.backend import Backend
from model.memory import MemoryConfig, TokenMemory
from model.slots import EncodedFrame
from stream.probe import probe
from stream.sampling import sample_frames
from workers.models import answerer_for, text_costs
from workers.pipeline import thumbnail

HISTORIES: dict[str, int] = {"1min": 60, "1h": 3600, "24h": 86_400}
"""History name -> frames (seconds at 1 fps)."""

APPEND_BATCH = 2000


@dataclass(frozen=True, slots=True)
class Seeds:
    """Real encoded frames to cycle. tokens: [K, s_max, s_max, D] float32; thumbs: K JPEGs."""

    tokens: np.ndarray
    thumbs: list[bytes]


def encode_seeds(backend: Backend, clip: str, count: int = 8) -> Seeds:
    """Encode ``count`` frames spread over the clip (sampled at the backend's image size)."""
    info = probe(clip, allow_local=True)
    fps = count / max(info.duration_s or 60.0, 1.0)
    size = (backend.info.image_size, backend.info.image_size)
    frames = [f.image for f in sample_frames(clip, fps=fps, size=size, allow_local=True)][:count]
    return Seeds(backend.encode(np.stack(frames)), [thumbnail(img) for img in frames])


def build_history(
    backend: Backend, memory: TokenMemory, sid: str, cfg: MemoryConfig, seeds: Seeds, frames: int
) -> float:
    """Create stream ``sid`` and append ``frames`` frames at 1 fps; returns the seconds it took.

    Each frame carries its timestamp-text cost, as the encode worker computes it.
    """
    memory.delete(sid)
    memory.create(sid, cfg)
    k = len(seeds.thumbs)

    def run() -> None:
        for lo in range(0, frames, APPEND_BATCH):
            seqs = range(lo, min(frames, lo + APPEND_BATCH))
            texts = text_costs(backend, cfg, [float(i) for i in seqs])
            batch = [
                EncodedFrame(
                    seq=i,
                    t=float(i),
                    tokens=seeds.tokens[i % k],
                    thumb=seeds.thumbs[i % k],
                    text_tokens=text,
                )
                for i, text in zip(seqs, texts, strict=True)
            ]
            memory.append(sid, batch)

    _, seconds = timed(run)
    return seconds


def history_bytes(memory: TokenMemory, sid: str, real_redis: bool) -> dict[str, Any]:
    """Redis bytes of the stream (MEMORY USAGE over its keys) and the payload bytes it holds."""
    out: dict[str, Any] = {"stored_bytes": memory.stored_bytes(sid)}
    if real_redis:
        total, n = keys_bytes(memory.r, memory.key(sid, "*"))
        out |= {"redis_bytes": total, "redis_keys": n}
    else:
        out |= {"redis_bytes": None, "redis_keys": len(list(memory.r.scan_iter(memory.key(sid, "*"))))}
    return out


def answer_once(backend: Backend, memory: TokenMemory, sid: str, question: str, new: int) -> dict[str, Any]:
    """One answer as the answer worker gives it: read the memory, build the prompt, generate.

    ttft_s and total_s include the memory read; model_* are the answerer's own times.
    """
    state, read_s = timed(lambda: memory.state(sid, with_tokens=True))
    slots, slots_s = timed(state.as_slots)
    ans = answerer_for(backend, state.config, new).answer(slots, question, state.config.budget)
    read_s += slots_s
    return {
        "read_s": read_s,
        "ttft_s": read_s + ans.ttft_s,
        "total_s": read_s + ans.total_s,
        "model_ttft_s": ans.ttft_s,
        "model_total_s": ans.total_s,
        "tokens_used": ans.tokens_used,
        "prompt_tokens": ans.prompt_tokens,
        "slots_used": ans.slots_used,
        "side": state.side,
        "new_tokens": ans.new_tokens,
        "frames_covered": state.next_seq,
    }


def measure_answers(
    backend: Backend,
    memory: TokenMemory,
    sids: dict[str, str],
    question: str,
    max_new_tokens: int,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Per history: medians (and ``best_*`` minima) over ``repeats`` rounds, histories interleaved,
    after a warm-up round.

    Generation is forced to exactly ``max_new_tokens`` tokens (``min_new_tokens`` in the
    model's generation config), so random weights hitting EOS early cannot skew the times.
    """
    backend.lm.generation_config.min_new_tokens = max_new_tokens
    for sid in sids.values():  # warm-up: one answer per history (each has its own prompt length)
        answer_once(backend, memory, sid, question, max_new_tokens)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sids}
    for r in range(repeats):
        for name, sid in sids.items():
            runs[name].append(answer_once(backend, memory, sid, question, max_new_tokens))
            log(f"answer {name} round {r + 1}: {runs[name][-1]['total_s']:.3f} s")
    out: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        row: dict[str, Any] = {k: median([x[k] for x in rs]) for k in rs[0] if k.endswith("_s")}
        row |= {f"best_{k}": min(x[k] for x in rs) for k in ("total_s", "ttft_s")}
        row |= {k: rs[0][k] for k in rs[0] if not k.endswith("_s")}
        if any(x["new_tokens"] != max_new_tokens for x in rs):
            row["new_tokens_mismatch"] = [x["new_tokens"] for x in rs]
        out[name] = row
    return out


def label_share(backend: Backend, memory: TokenMemory, sid: str, question: str) -> dict[str, Any]:
    """How much of the budget the slots' texts take in the prompt the answer worker builds.

    ``label_tokens``: every per-slot text token of the prompt (the time label and the slot's own
    markers, ``Prompt.text_tokens_per_slot``); ``label_share``: that over the memory's budget (the
    headline, target < 25%); ``label_share_of_used``: over the memory part actually used
    (``tokens_used``: visual tokens plus slot texts). ``accounted_label_tokens``: what the memory
    reserved for them (each slot's ``text_tokens``).
    """
    state = memory.state(sid, with_tokens=True)
    slots = state.as_slots()
    cfg = state.config
    prompt = backend.build_prompt(slots, question, answerer_for(backend, cfg, 1).prompt_cfg, cfg.budget)
    labels = sum(prompt.text_tokens_per_slot)
    return {
        "label_tokens": labels,
        "label_share": labels / cfg.budget,
        "label_share_of_used": labels / prompt.tokens_used if prompt.tokens_used else None,
        "accounted_label_tokens": sum(s.text_tokens for s in slots),
        "visual_tokens": prompt.visual_tokens,
    }
