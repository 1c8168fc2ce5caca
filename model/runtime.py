"""Device and dtype choice, shared by every torch backend.

Rule: cuda when available, else cpu. dtype ``auto`` is bf16 on cuda; on cpu it is bf16 only where the CPU
computes bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16``, arm64 ``bf16``), else fp32. With native bf16,
bf16 runs 2.7–3.3× faster than fp32. Without it, bf16 matmuls are emulated or fall back to reference loops:
a 1024×896 @ 896×4864 matmul took 9.1 s in bf16 against 82 ms in fp32 on an AMD EPYC without
``avx512_bf16``, and 0.43 s against 0.17 s on an Intel Xeon (Ice Lake) with AVX-512 but no ``avx512_bf16``,
where the random-0.5b preset encoded a frame in 11.4 s against 2.85 s and prefilled 1,024 tokens in 18.6 s
against 5.2 s (2 cores).

The CPU's flags are read once from ``/proc/cpuinfo`` (Linux); elsewhere the CPU counts as without native
bf16. The decision itself (``bf16_native``) is a pure function of the flags. Knows nothing about models.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from model.backend import DtypeName

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

NATIVE_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "bf16")
"""CPU flags (``/proc/cpuinfo``) that mean bf16 arithmetic in hardware: x86 AVX-512 BF16 and AMX-BF16
(``flags``), arm64's BF16 extension (``Features``)."""

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True)
class CpuCapability:
    """What the CPU offers for bf16: its model name, its flags and torch's own view of its vector unit."""

    model: str
    flags: frozenset[str]
    torch_capability: str
    """``torch.backends.cpu.get_cpu_capability()``: e.g. ``DEFAULT``, ``AVX2``, ``AVX512``, ``SVE256``."""

    @property
    def bf16_native(self) -> bool:
        return bf16_native(self.flags)

    def describe(self) -> str:
        """One line for benchmarks, e.g. ``Intel Xeon …; native bf16: no (avx512_bf16 no, amx_bf16 no);
        torch cpu capability: AVX512``."""
        have = ", ".join(f"{f} {'yes' if f in self.flags else 'no'}" for f in NATIVE_BF16_FLAGS[:2])
        native = "yes" if self.bf16_native else "no"
        return f"{self.model}; native bf16: {native} ({have}); torch cpu capability: {self.torch_capability}"


def bf16_native(flags: Iterable[str]) -> bool:
    """Whether a CPU with these ``/proc/cpuinfo`` flags computes bf16 in hardware."""
    return not set(NATIVE_BF16_FLAGS).isdisjoint(flags)


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in ``/proc/cpuinfo`` text (x86 ``flags``, arm64
    ``Features``); ``("unknown", frozenset())`` for what it cannot read."""
    model, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key in ("model name", "Model", "Hardware") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


@functools.cache
def cpu_capability() -> CpuCapability:
    """This machine's CPU, read once (``/proc/cpuinfo`` and torch)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        text = ""
    model, flags = parse_cpuinfo(text)
    return CpuCapability(model, flags, torch.backends.cpu.get_cpu_capability())


def cpu_bf16_native() -> bool:
    """Whether this machine's CPU computes bf16 in hardware (``auto`` then picks bf16 on cpu)."""
    return cpu_capability().bf16_native


def describe_cpu() -> str:
    """One line saying what this CPU offers for bf16 (``CpuCapability.describe``)."""
    return cpu_capability().describe()


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` (e.g. "cpu", "cuda:1") or, when None, cuda if available else cpu."""
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_dtype(device: torch.device, cpu_bf16: bool) -> torch.dtype:
    """``auto``'s choice: bf16 on cuda, bf16 on a cpu with native bf16 (``cpu_bf16``), else fp32
    (also on other devices, e.g. mps)."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16):
        return torch.bfloat16
    return torch.float32


def pick_dtype(name: DtypeName, device: torch.device) -> torch.dtype:
    """The torch dtype for ``name``; ``auto``: ``auto_dtype`` with this machine's CPU."""
    if name == "auto":
        return auto_dtype(device, device.type == "cpu" and cpu_bf16_native())
    return _DTYPES[name]
