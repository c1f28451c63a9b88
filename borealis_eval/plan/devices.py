"""The machines a plan can be made for: what the time and memory estimates assume about each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

@dataclass(frozen=True)
class Device:
    """What the time and memory estimates assume about the machine."""

    name: str
    kind: Literal["cpu", "cuda"]
    memory_bytes: float
    peak_flops: float          # dense bf16 FLOP/s (GPU) or effective fp32 FLOP/s (CPU)
    mfu: float                 # fraction of peak a training micro-batch reaches
    launch_s_per_layer: float  # per micro-batch and LLM layer: the eager-PyTorch launch floor
    decode_s_per_layer: float  # per generated-token step and LLM layer (batch 16, merged LoRA)
    whisper_rtfx: float        # plain-Whisper baseline: audio seconds per wall second

    def describe(self) -> str:
        if self.kind == "cpu":
            return f"{self.name}: {self.memory_bytes / 2**30:.0f} GiB RAM; times are probed here or given, not derived"
        return (f"{self.name}: {self.memory_bytes / 1e9:.0f} GB, peak {self.peak_flops / 1e12:.0f} TFLOP/s at "
                f"{self.mfu:.0%} utilisation, launch floor {self.launch_s_per_layer * 1e3:.1f} ms/layer/micro-batch, "
                f"decode {self.decode_s_per_layer * 1e3:.2f} ms/layer/token step, Whisper RTFx {self.whisper_rtfx:g}")


# H200 (141 GB HBM3e, 989 TFLOP/s dense bf16). Launch floor: LoRA 350M (22 layers) trained at 0.156 s
# per batch-8 step on an H200, nearly all launch overhead (benchmarks/README.md row 9); decoding: 695
# tok/s at batch 16 for 22 layers (row 8) = 23 ms per token step. The 35% utilisation and the
# baseline RTFx are assumptions, not measurements.
H200 = Device("H200", "cuda", 141e9, 989e12, 0.35, 0.156 / 22, 16 / 695 / 22, 100.0)
CPU = Device("CPU", "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), 20e9, 1.0, 0.0, 0.0, 3.0)
DEVICES = {"h200": H200, "cpu": CPU}
