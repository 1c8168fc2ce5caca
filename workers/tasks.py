"""Celery tasks: thin wrappers over ``workers.pipeline``. One Runtime (and model) per worker process."""

from __future__ import annotations

import os
from functools import lru_cache

from celery import current_app, shared_task
from celery.signals import worker_process_init

from vidmem.settings import get_settings
from workers import pipeline
from workers.dispatch import CeleryDispatcher
from workers.runtime import Runtime


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    rt = Runtime.create(get_settings())
    rt.dispatcher = CeleryDispatcher(current_app._get_current_object())
    return rt


@worker_process_init.connect
def _load_models(**_: object) -> None:
    """Load the model once per worker process, before the first task (not in the parent: torch + fork)."""
    queues = set(os.environ.get("VIDMEM_WORKER_QUEUES", "").split(","))
    rt = runtime()
    if queues & {"encode", "answer"}:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("VIDMEM_TORCH_THREADS", str(os.cpu_count() or 1)))))
        rt.backend()


@shared_task(name="vidmem.ingest", ignore_result=True)
def ingest(job_id: str) -> None:
    pipeline.ingest_video(runtime(), job_id)


@shared_task(name="vidmem.encode", ignore_result=True)
def encode(job_id: str, stream_id: str, frames_key: str) -> None:
    pipeline.encode_chunk(runtime(), job_id, stream_id, frames_key)


@shared_task(name="vidmem.answer", ignore_result=True)
def answer(
    stream_id: str,
    request_id: str,
    question: str,
    max_new_tokens: int,
    window: list[float | None] | None = None,
) -> None:
    pipeline.answer_question(runtime(), stream_id, request_id, question, max_new_tokens, window)
