"""Mixed precision and memory layout for training: which autocast a device gets, and channels-last.

On CUDA ``train.amp`` means autocast in ``train.amp_dtype`` (float16 with a gradient scaler, or
bfloat16), as before. On the CPU it means bfloat16 autocast when ``amp_dtype`` is bfloat16 (with
the default float16, a CUDA setting, the CPU trains in float32 as before), and only where the CPU computes in
bf16 natively (AVX-512 BF16 or AMX, which oneDNN reports): elsewhere the CPU's bf16 kernels emulate
the format and a convolution runs ~10x *slower* than in float32 (measured on the AVX2-only EPYC of
docs/benchmarks.md), so the run falls back to float32 and says so in one line. float16 autocast on
the CPU has no fast kernels, so the CPU never uses it; bf16 needs no gradient scaler.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import torch
from torch import nn


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 convolutions and matmuls natively (oneDNN's own test:
    AVX-512 BF16 / AMX); ``False`` where PyTorch was built without oneDNN."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class AmpPlan:
    """The precision a run trains in. ``dtype`` is the autocast dtype, ``None`` for float32;
    ``note`` is the one line saying why a requested autocast was changed or dropped (else None)."""

    device_type: str
    dtype: torch.dtype | None
    note: str | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        """float16 gradients underflow without loss scaling; bf16 has float32's exponent range."""
        return self.device_type == "cuda" and self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass; an explicitly *disabled* one for float32, so an outer
        autocast never decides this model's precision."""
        return torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.enabled) if self.enabled \
            else torch.autocast(self.device_type, enabled=False)


def plan_amp(device: torch.device | str, amp: bool, dtype: torch.dtype = torch.float16, *, what: str = "train.amp",
             bf16_native: bool | None = None) -> AmpPlan:
    """``amp`` / ``dtype`` as configured -> the :class:`AmpPlan` for ``device``.

    CUDA: unchanged (``dtype`` as given). CPU: float32 unless ``dtype`` is bfloat16; then bfloat16
    where :func:`cpu_bf16_native` (or ``bf16_native`` when given, for tests), else float32 with a
    note. Other devices: float32."""
    device = torch.device(device)
    if not amp:
        return AmpPlan(device.type, None)
    if device.type == "cuda":
        return AmpPlan("cuda", dtype)
    if device.type != "cpu":
        return AmpPlan(device.type, None, f"{what}: no mixed precision on {device.type}; training in float32")
    if dtype != torch.bfloat16:
        # float16 autocast is the CUDA setting (and every config's default): the CPU trains in
        # float32 unless bf16 is asked for by name, since bf16's effect on accuracy is a choice
        return AmpPlan("cpu", None)
    native = cpu_bf16_native() if bf16_native is None else bf16_native
    if not native:
        capability = torch.backends.cpu.get_cpu_capability()
        return AmpPlan("cpu", None, f"{what}: this CPU ({capability}) has no native bf16 (needs AVX-512 BF16 or AMX); running in float32")
    return AmpPlan("cpu", torch.bfloat16)


def say(note: str | None) -> None:
    """Print a plan's note as one line on stderr (rank 0 only is the caller's business)."""
    if note:
        print(f"bevsimdet: {note}", file=sys.stderr, flush=True)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store every 4-d parameter and buffer of ``module`` channels-last (NHWC), in place.

    Convolutions then pick oneDNN's NHWC kernels and their outputs stay NHWC, so the layout
    propagates through the network without per-layer copies. Values are unchanged; results differ
    from NCHW only by float rounding (another summation order). Checkpoints still hold contiguous
    NCHW tensors (the checkpoint writer calls ``.contiguous()``), and loading copies values into
    the NHWC parameters."""
    return module.to(memory_format=torch.channels_last)


__all__ = ["AmpPlan", "plan_amp", "cpu_bf16_native", "to_channels_last", "say"]
