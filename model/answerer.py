"""Answer a question over memory slots: greedy generation, whole or streamed, with timings.

The prompt comes from the backend's ``build_prompt``; generation from an engine (``model.engine``).
``Answerer.answer`` returns an ``Answer``; ``Answerer.stream`` runs generation in a thread and yields text
pieces (``transformers.TextIteratorStreamer``), and stops generating if the consumer goes away, or once its
``should_stop`` callable says so (asked between generation steps, at most every ``stop_poll_s``).
``ttft_s`` is measured when ``generate`` hands over its first new token.

This module knows nothing about Redis, Celery, HTTP or encoders: it takes ``Slot`` values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from model.backend import Backend
from model.engine import Engine, HFEngine
from model.prompt import Prompt, PromptConfig
from model.slots import Slot


@dataclass(frozen=True, slots=True)
class AnswerConfig:
    """Generation settings (greedy decoding)."""

    max_new_tokens: int = 128
    stream_timeout_s: float | None = 600.0
    """Longest wait for the next streamed piece before the stream fails (queue.Empty)."""
    stop_poll_s: float = 0.2
    """Least time between two calls of a stream's ``should_stop`` (it may cost a round trip)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.stop_poll_s < 0:
            raise ValueError(f"stop_poll_s must be >= 0, got {self.stop_poll_s}")


@dataclass(frozen=True, slots=True)
class Answer:
    """A finished answer with its costs. Times in seconds from the start of the request."""

    text: str
    tokens_used: int
    """Memory part of the prompt: visual tokens plus slot texts (<= budget)."""
    budget: int
    slots_used: int
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    total_s: float


class _FirstTokenClock(BaseStreamer):
    """Records when generate hands over its first new token (its first put is the prompt)."""

    def __init__(self) -> None:
        self._prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._prompt_seen = True

    def end(self) -> None:
        pass


class _TimedTextStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also records the first new token's time and counts new tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, timeout: float | None) -> None:
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
        self.first_token_at: float | None = None
        self.new_tokens = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.new_tokens += int(value.numel())
        super().put(value)


class _Cancelled(StoppingCriteria):
    """Stops generation once ``event`` is set (the stream's consumer went away), or once ``should_stop()``
    returns True (asked at most every ``poll_s``); ``stopped_early`` then says so."""

    def __init__(
        self, event: threading.Event, should_stop: Callable[[], bool] | None = None, poll_s: float = 0.0
    ) -> None:
        self.event, self.should_stop, self.poll_s = event, should_stop, poll_s
        self.stopped_early = False
        self._next_poll = 0.0

    def _asked_to_stop(self) -> bool:
        if self.should_stop is None or time.monotonic() < self._next_poll:
            return False
        self._next_poll = time.monotonic() + self.poll_s
        if self.should_stop():
            self.stopped_early = True
            self.event.set()
        return self.stopped_early

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self.event.is_set() or self._asked_to_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class AnswerStream:
    """Iterator of answer text pieces; ``result()`` gives the Answer once it is exhausted.

    Generation runs in a daemon thread. Errors there are re-raised to the consumer. A consumer
    that stops early must call ``close()`` (or use the stream as a context manager), which
    stops the generation at its next step and joins the thread. A generation that ``should_stop``
    ended early ends the iteration; ``stopped_early`` then says so (``result()`` has the text so far).
    """

    def __init__(
        self,
        streamer: _TimedTextStreamer,
        stopping: _Cancelled,
        generate: Callable[[], object],
        finish: Callable[[str, _TimedTextStreamer], Answer],
    ) -> None:
        self._streamer, self._stopping, self._finish = streamer, stopping, finish
        self._cancel = stopping.event
        self._error: BaseException | None = None
        self._answer: Answer | None = None
        self._pieces = self._iterate()
        self._thread = threading.Thread(
            target=self._run, args=(generate,), name="vidmem-generate", daemon=True
        )
        self._thread.start()

    def _run(self, generate: Callable[[], object]) -> None:
        try:
            generate()
        except BaseException as exc:  # handed to the consumer and re-raised there
            self._error = exc
            self._streamer.end()

    def _iterate(self) -> Generator[str, None, None]:
        pieces: list[str] = []
        try:
            for piece in self._streamer:
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            self._cancel.set()  # no-op when generation already ended
            self._thread.join()
        if self._error is not None:
            raise self._error
        self._answer = self._finish("".join(pieces), self._streamer)

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating and wait for the generation thread."""
        self._cancel.set()
        self._pieces.close()
        self._thread.join()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far."""
        return self._streamer.new_tokens

    @property
    def stopped_early(self) -> bool:
        """Whether ``should_stop`` ended the generation."""
        return self._stopping.stopped_early

    def result(self) -> Answer:
        if self._answer is None:
            raise RuntimeError("the answer stream has not been consumed to its end")
        return self._answer


class Answerer:
    """Greedy answers over memory slots with a loaded backend (the HF engine unless told otherwise)."""

    def __init__(
        self,
        backend: Backend,
        prompt: PromptConfig | None = None,
        gen: AnswerConfig | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.backend = backend
        self.prompt_cfg = prompt or PromptConfig()
        self.gen = gen or AnswerConfig()
        self.engine = engine or HFEngine(backend.lm, backend.tokenizer)

    def _generate(
        self, prompt: Prompt, streamer: BaseStreamer, cancel: _Cancelled | None = None
    ) -> torch.Tensor:
        """New token ids [1, T]."""
        stopping = StoppingCriteriaList([cancel] if cancel is not None else [])
        return self.engine.generate(prompt, self.gen.max_new_tokens, streamer, stopping)

    def _answer(
        self,
        prompt: Prompt,
        n_slots: int,
        budget: int,
        text: str,
        new_tokens: int,
        times: tuple[float, float | None, float],
    ) -> Answer:
        start, first, end = times
        return Answer(
            text=text,
            tokens_used=prompt.tokens_used,
            budget=budget,
            slots_used=n_slots,
            prompt_tokens=prompt.prompt_tokens,
            new_tokens=new_tokens,
            ttft_s=(first if first is not None else end) - start,
            total_s=end - start,
        )

    def answer(
        self, slots: Sequence[Slot], question: str, budget: int, gaps: Sequence[tuple[float, float]] = ()
    ) -> Answer:
        """Answer ``question`` over ``slots`` (memory order) in one call; ``gaps`` as in build_prompt."""
        start = time.perf_counter()
        prompt = self.backend.build_prompt(slots, question, self.prompt_cfg, budget, gaps)
        clock = _FirstTokenClock()
        out = self._generate(prompt, clock)
        end = time.perf_counter()
        text = str(self.backend.tokenizer.decode(out[0].tolist(), skip_special_tokens=True))
        return self._answer(
            prompt, len(slots), budget, text, int(out.shape[-1]), (start, clock.first_token_at, end)
        )

    def stream(
        self,
        slots: Sequence[Slot],
        question: str,
        budget: int,
        gaps: Sequence[tuple[float, float]] = (),
        should_stop: Callable[[], bool] | None = None,
    ) -> AnswerStream:
        """Answer ``question`` over ``slots`` as an iterator of text pieces; ``gaps`` as in build_prompt.
        ``should_stop`` (called from the generation thread, at most every ``stop_poll_s``) ends the
        generation early when it returns True.

        Prompt errors (EmptyMemory, BudgetError) raise here, before any thread starts.
        """
        start = time.perf_counter()
        prompt = self.backend.build_prompt(slots, question, self.prompt_cfg, budget, gaps)
        streamer = _TimedTextStreamer(self.backend.tokenizer, self.gen.stream_timeout_s)
        cancel = _Cancelled(threading.Event(), should_stop, self.gen.stop_poll_s)

        def finish(text: str, s: _TimedTextStreamer) -> Answer:
            times = (start, s.first_token_at, time.perf_counter())
            return self._answer(prompt, len(slots), budget, text, s.new_tokens, times)

        return AnswerStream(streamer, cancel, lambda: self._generate(prompt, streamer, cancel), finish)
