"""dtype ``auto`` by what the CPU can do: bf16 on cuda and on CPUs with native bf16, else fp32."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model import runtime
from model.runtime import (
    auto_dtype,
    bf16_native,
    cpu_bf16_native,
    cpu_capability,
    describe_cpu,
    parse_cpuinfo,
    pick_device,
    pick_dtype,
)

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ICE_LAKE = """model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_vbmi2
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve bf16 i8mm
CPU implementer\t: 0x41
"""


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A fake /proc/cpuinfo (write it before asking), with the cached reading cleared around the test."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(runtime, "CPUINFO", path)
    cpu_capability.cache_clear()
    yield path
    cpu_capability.cache_clear()


@pytest.mark.parametrize(
    ("text", "model", "native"),
    [
        (EPYC, "AMD EPYC 7B13 64-Core Processor", False),
        (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8481C", True),
        (ICE_LAKE, "Intel(R) Xeon(R) Processor @ 2.80GHz", False),
        (GRAVITON3, "unknown", True),
        ("", "unknown", False),
    ],
)
def test_native_bf16_is_read_from_the_flags(text: str, model: str, native: bool) -> None:
    name, flags = parse_cpuinfo(text)
    assert name == model
    assert bf16_native(flags) is native


def test_avx512_without_bf16_is_not_native() -> None:
    assert not bf16_native({"avx512f", "avx512bw", "avx512_vnni"})
    assert bf16_native({"avx2", "avx512_bf16"})
    assert bf16_native({"amx_bf16"})


def test_auto_is_bf16_on_cuda_and_on_native_cpus_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto_dtype(cuda, cpu_bf16=False) == torch.bfloat16
    assert auto_dtype(cpu, cpu_bf16=True) == torch.bfloat16
    assert auto_dtype(cpu, cpu_bf16=False) == torch.float32
    assert auto_dtype(torch.device("mps"), cpu_bf16=True) == torch.float32


def test_pick_dtype_follows_this_machines_cpu(fake_cpu: Path) -> None:
    cpu = torch.device("cpu")
    fake_cpu.write_text(EPYC)
    assert not cpu_bf16_native()
    assert pick_dtype("auto", cpu) == torch.float32
    cpu_capability.cache_clear()
    fake_cpu.write_text(SAPPHIRE_RAPIDS)
    assert cpu_bf16_native()
    assert pick_dtype("auto", cpu) == torch.bfloat16
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_named_dtypes_are_kept_whatever_the_cpu(fake_cpu: Path) -> None:
    fake_cpu.write_text(EPYC)
    cpu = torch.device("cpu")
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert pick_dtype("float16", cpu) == torch.float16
    assert pick_dtype("float32", torch.device("cuda")) == torch.float32


def test_no_cpuinfo_means_fp32(fake_cpu: Path) -> None:
    assert not fake_cpu.exists()
    assert not cpu_bf16_native()
    assert cpu_capability().model == "unknown"
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32


def test_the_description_is_one_line_with_the_flags_and_torchs_view(fake_cpu: Path) -> None:
    fake_cpu.write_text(EPYC)
    line = describe_cpu()
    assert "\n" not in line
    assert line.startswith("AMD EPYC 7B13 64-Core Processor; native bf16: no (avx512_bf16 no, amx_bf16 no)")
    assert line.endswith(f"torch cpu capability: {torch.backends.cpu.get_cpu_capability()}")
    cpu_capability.cache_clear()
    fake_cpu.write_text(SAPPHIRE_RAPIDS)
    assert "native bf16: yes (avx512_bf16 yes, amx_bf16 yes)" in describe_cpu()


def test_the_cpu_is_read_once(fake_cpu: Path) -> None:
    fake_cpu.write_text(SAPPHIRE_RAPIDS)
    assert cpu_bf16_native()
    fake_cpu.write_text(EPYC)
    assert cpu_bf16_native()  # cached: the CPU does not change under a running process


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda")
