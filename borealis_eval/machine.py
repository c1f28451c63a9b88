"""What machine a run trained on: the CPU's model name (two CPU families serve one machine kind
and give different trained numbers, so the report names them), and whether it computes bf16
natively (what `precision: auto` resolves to, for training and for the frozen encoder)."""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (`model name` in /proc/cpuinfo on Linux, else what platform reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: assume not
        return False


def bf16_for(precision: str) -> bool:
    """Whether a `precision` setting (fp32, bf16, auto) computes in bf16 here: auto means bf16 on a
    CUDA GPU or a CPU with native bf16, fp32 elsewhere (where autocast would emulate bf16, slowly)."""
    if precision != "auto":
        return precision == "bf16"
    import torch

    return torch.cuda.is_available() or native_bf16()
