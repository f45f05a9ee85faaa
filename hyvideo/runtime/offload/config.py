"""Where the weights live while a video is generated: the ``--offload`` modes.

``none``
    Every component stays on the device.
``model`` (the official ``--use-cpu-offload``)
    Components live in CPU memory and visit the device whole for their stage: the text encoders
    for encoding, the DiT for the denoising loop, the VAE for decoding.
``sequential``
    Every weight lives in CPU memory (pinned when the device is an accelerator); each module's
    own weights are copied to the device by a forward pre-hook just before it runs and dropped by
    a forward hook right after. Lowest memory, slowest (every weight crosses the bus every call).
``blocks`` (block swap)
    Text encoders and VAE as in ``model``. For the DiT, the small modules (embedders, token
    refiner, final layer) move to the device for the denoising loop, while the 60 transformer
    blocks live in one pinned CPU buffer each and only ``blocks_on_device`` (K) of them are on
    the device, in K fixed device slots re-filled with ``copy_``. When block i starts, blocks
    i+1..i+K-1 (wrapping past the last block to the first ones, for the next step) are copied on
    a side stream; the compute stream waits for a block's copy event before running it, and a
    slot is refilled only after the compute stream's event recorded at the end of the block that
    used it. Slots are allocated once per denoising loop, not per step.

Every mode computes exactly what ``none`` computes: weights are copied bit for bit and nothing
else changes. Hooks are registered with the public ``nn.Module`` hook API inside
:meth:`use` and removed on exit; no ``forward`` is replaced. On the CPU (no accelerator) there is
nothing to offload to, but the bookkeeping still runs -- the "device copies" are real copies
into separate buffers -- so the tests exercise the same paths; pinning and streams are skipped.

Memory budget for 720x1280, 129 frames on a 24 GB GPU (ESTIMATES from parameter counts and
tensor shapes, not measurements):

* Geometry: latents 16 x 33 x 90 x 160; with the 1x2x2 patch that is 33*45*80 = 118,800 image
  tokens (+ up to 256 text tokens); hidden size 3072. One token tensor [1, 119k, 3072] in bf16
  is ~0.73 GB.
* DiT weights: ~12.8 B parameters. bf16: ~25.6 GB -- does not fit at all. FP8 (official
  ``*_fp8.pt``, block Linears in float8): ~12.4 GB of block weights + ~0.7 GB of bf16 small
  modules, norms and biases: ~13 GB.
* Activations inside one block (batch 1, the cfg-distilled model needs no CFG batch; SDPA
  flash / memory-efficient attention, no N^2 matrix): the single block's linear1 output
  [119k, 21504] is ~5.1 GB, q/k/v ~2.2 GB, the MLP hidden [119k, 12288] ~2.9 GB plus its
  activation, the residual stream and RoPE tables; peak roughly 6-10 GB. With real CFG
  (``--cfg-scale`` > 1, batch 2) double that.
* So FP8 + everything resident: ~13 GB weights + 6-10 GB activations + ~1 GB context and
  workspaces = 20-24 GB: at the limit, and only if the text encoders (llava-llama-3-8B in
  fp16 ~16 GB, CLIP-L ~0.25 GB) and the VAE are not on the device at the same time -- ``model``
  offload is required in any case.
* ``blocks`` with K=2: the block slots hold 2 x the largest block (a double block is ~340 M
  parameters: ~0.68 GB in bf16, ~0.34 GB in FP8) plus ~0.7 GB of small modules: under 2.1 GB of
  DiT weights even in bf16, leaving ~20 GB for activations. bf16 weights then fit on 24 GB.
  Cost: every step streams all block weights (~25 GB bf16 / ~12.5 GB FP8) over PCIe, ~1 s
  (bf16) at ~25 GB/s pinned; one block's compute at 720p takes on the order of a second
  (~13 PFLOP per step, linears + attention, over 60 blocks), far longer than its ~27 ms copy,
  so the prefetch hides the transfer. Host memory: the pinned blocks need ~26 GB (bf16) of RAM.
* ``sequential``: only one module's weights on the device at a time (the largest, a single
  block's linear1, ~0.13 GB in bf16), but every copy is on the compute stream, not hidden.
* VAE decode: ~0.25 B parameters (~0.5 GB fp16); untiled decoding of 129 x 720 x 1280 frames
  needs tens of GB, the default tiling (``--vae-tiling``) keeps it to a few GB.
"""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

log = logging.getLogger(__name__)

MODES = ("none", "model", "sequential", "blocks")
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class OffloadConfig:
    """Which offload mode, and its parameters (``blocks_on_device``: K for ``blocks``)."""

    mode: str = "none"
    blocks_on_device: int = 2
    pin_memory: bool = True  # pin the CPU copies when the device is an accelerator

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown offload mode {self.mode!r}: use one of {', '.join(MODES)}")
        k = self.blocks_on_device
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"blocks on device must be an integer >= 1 (2-4 is typical), got {k!r}")

    def load_device(self, device: torch.device | str) -> torch.device:
        """Where the components should be loaded: the device for ``none``, else the CPU."""
        return torch.device(device) if self.mode == "none" else _CPU

    def describe(self) -> str:
        """One line saying what the mode does."""
        return {
            "none": "offload none: every component stays on the device",
            "model": "offload model (the official --use-cpu-offload): components live in CPU memory; the text "
                     "encoders, the DiT and the VAE each move whole to the device for their stage",
            "sequential": "offload sequential: weights live in CPU memory and each layer's weights "
                          "are copied to the device just before it runs (lowest memory, slowest)",
            "blocks": f"offload blocks: {self.blocks_on_device} DiT transformer blocks at a time on "
                      "the device, the others in pinned CPU memory, prefetched on a side stream; "
                      "text encoders and VAE move whole for their stage",
        }[self.mode]


class Offload(Protocol):
    """What the pipeline uses: ``with offload.use("dit"): ...`` around each stage."""

    def use(self, name: str): ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
