"""Which device and which precision: resolved once, by one set of rules, for every command.

Speed on a CPU depends on features many machines lack: on an AVX2-only CPU a bf16 matmul ran 12-19x
slower than fp32 (bf16 is emulated), while on a CPU with AMX or AVX-512-BF16 it is the fastest path. So
`auto` asks the hardware instead of assuming: bf16 autocast on CUDA GPUs that support it and on CPUs
where oneDNN reports native bf16; fp16 autocast on older CUDA GPUs with tensor cores; fp32 elsewhere.
The resolved value (never `auto`) is what runs record in their config and stores in their provenance.
"""
from __future__ import annotations

import logging
import platform
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
PRECISION_HELP = ("auto (bf16 where the hardware runs it natively: CUDA with bf16, CPUs with AMX or "
                  "AVX-512-BF16; fp16 on older CUDA; else fp32), bf16, fp16 or fp32")


class HardwareError(ValueError):
    """A device or precision was asked for that this machine cannot provide."""


def resolve_device(device: str = "auto") -> str:
    """`auto` → `cuda` when torch sees a GPU, else `cpu`; `cpu`, `cuda`, `cuda:N` checked and returned."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise HardwareError(f"unknown device {device!r}: use {DEVICE_HELP}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HardwareError(f"device {device!r}: torch sees no CUDA GPU here; use --device cpu or auto")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise HardwareError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    return device


def device_type(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


@lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """oneDNN's own answer: True on CPUs with AVX-512-BF16 or AMX, where bf16 matmuls are fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cuda_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()


def native_precisions(device: str) -> list[str]:
    """The autocast precisions this device runs natively (fast), best first; fp32 always last."""
    if device_type(device) == "cuda":
        major, _ = torch.cuda.get_device_capability(_cuda_index(device))
        out = []
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        if major >= 7:
            out.append("fp16")
        return out + ["fp32"]
    return (["bf16"] if cpu_has_native_bf16() else []) + ["fp32"]


@dataclass(frozen=True)
class Precision:
    """A resolved precision: its name (bf16|fp16|fp32), the autocast dtype, and why it was chosen."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.name]

    @property
    def autocast(self) -> bool:
        return self.name != "fp32"


def resolve_precision(requested: str, device: str, warn: bool = True, auto_on_cpu: str | None = None) -> Precision:
    """`auto` → the best native precision of `device`; an explicit one is kept (with a warning when the
    hardware only emulates it, so a slow run is never a surprise).

    `auto_on_cpu` (e.g. "fp32") is what `auto` means on a CPU for a caller that has measured a reason to
    differ from the speed rule (feature extraction keeps fp32 for fidelity); it changes nothing on CUDA."""
    requested = (requested or "auto").lower()
    if requested not in PRECISIONS:
        raise HardwareError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    native = native_precisions(device)
    where = describe_device(device)
    if requested == "auto" and auto_on_cpu is not None and device_type(device) == "cpu":
        return Precision(auto_on_cpu, f"auto: {auto_on_cpu} on {where}, the caller's choice for CPUs")
    if requested == "auto":
        name = native[0]
        return Precision(name, f"auto: {name} is the fastest native precision on {where}")
    if requested == "fp16" and device_type(device) == "cpu":
        raise HardwareError("fp16 autocast is for CUDA GPUs; on a CPU use --precision auto, bf16 or fp32")
    if requested not in native and warn:
        warnings.warn(f"--precision {requested} on {where}: this hardware has no native {requested}, so it is "
                      f"emulated and can be many times slower than fp32; --precision auto picks {native[0]}",
                      stacklevel=2)
    return Precision(requested, f"asked for {requested}" + ("" if requested in native else " (emulated here)"))


@lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: str) -> str:
    """`NVIDIA H100 80GB HBM3 (cuda:0)` or `Intel(R) Xeon(R) ... (cpu, AVX512, native bf16: yes)`."""
    if device_type(device) == "cuda":
        return f"{torch.cuda.get_device_name(_cuda_index(device))} ({device})"
    return (f"{cpu_model()} (cpu, {torch.backends.cpu.get_cpu_capability()}, "
            f"native bf16: {'yes' if cpu_has_native_bf16() else 'no'}, {torch.get_num_threads()} threads)")


def machine_record(device: str) -> dict:
    """What a run or a benchmark records about where it ran."""
    return {"device": device, "device_name": describe_device(device), "torch": torch.__version__,
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_native_bf16": cpu_has_native_bf16()}
