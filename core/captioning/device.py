"""Device and dtype selection for captioning models.

torch is imported inside the functions so that importing this module (and
``core.captioning``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = ["CPU_BF16_FLAGS", "DEVICE_CHOICES", "cpu_class", "cpu_has_bf16", "default_dtype", "resolve_device"]

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: CPU flags (``/proc/cpuinfo``) that mean bf16 arithmetic in hardware.
CPU_BF16_FLAGS: frozenset[str] = frozenset({"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_class() -> str:
    """``"amx"`` for a CPU with AMX tiles (bf16/int8 matrix units), else ``"other"``: the two
    kinds of CPU on which the runtimes were measured to rank differently."""
    return "amx" if "amx_bf16" in _cpu_flags() else "other"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); without it bf16
    is emulated and several times slower than fp32 (docs/optimization-notes.md, "bf16 on CPU")."""
    return bool(CPU_BF16_FLAGS & _cpu_flags())


def _mps_available(torch_mod: object) -> bool:
    backends = getattr(torch_mod, "backends", None)
    mps = getattr(backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str = "auto") -> torch.device:
    """Turn a user choice into a concrete ``torch.device``.

    ``"auto"`` picks CUDA, then Apple MPS, then CPU.  Asking explicitly for a
    device that is not there raises :class:`ModelLoadError` (kind ``"device"``)
    instead of silently falling back, because the user would otherwise wonder
    why captioning is many times slower than expected.  ``"cuda:1"`` style indices
    are accepted.

    Raises:
        ValueError: ``device`` is not one of ``auto``, ``cpu``, ``cuda[:N]``, ``mps``.
        ModelLoadError: the requested accelerator is not available.
    """
    import torch

    choice = device.strip().lower()
    base = choice.split(":", 1)[0]
    if base not in DEVICE_CHOICES or (":" in choice and base != "cuda"):
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"Device {device!r} was requested but no CUDA GPU is available to PyTorch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
                "Use --device cpu or --device auto.",
                kind="device",
            )
        dev = torch.device(choice)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"Device {device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist.",
                kind="device",
            )
        return dev
    if base == "mps":
        if not _mps_available(torch):
            raise ModelLoadError(
                f"Device {device!r} was requested but Apple MPS is not available. Use --device cpu or --device auto.",
                kind="device",
            )
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """The fastest safe dtype for inference on ``device``.

    * CUDA: bf16 when the GPU supports it (no overflow issues, same speed as
      fp16 on Ampere+), else fp16.
    * MPS: fp16 (bf16 support on MPS is patchy across macOS versions).
    * CPU: fp32.  Without bf16 hardware bf16 is *slower* on CPU (see
      docs/optimization-notes.md, "bf16 on CPU"); int8 dynamic quantization is the
      CPU speed-up instead (see :mod:`core.captioning.optimize`).
    """
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
