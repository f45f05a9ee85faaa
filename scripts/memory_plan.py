"""Peak device memory of one generation at full size, computed on the CPU (no GPU, no weights).

    python scripts/memory_plan.py [--json FILE] [--sizes 544x960,720x1280] [--frames 129]

Runs the real code path -- text encoding, one denoising step, VAE decode with tiling -- with
every tensor a fake one (``FakeTensorMode``: shapes, dtypes and devices, no storage), the meta
device standing for the GPU and the CPU for the host. A ``TorchDispatchMode`` sees every op and
counts the live bytes of every storage per device (a storage is counted from the op that made it
until Python frees it), so the peak is the peak of the tensors the code holds, exactly as PyTorch's
``memory_allocated`` would report it on a GPU. Not counted: the CUDA context (~0.5 GiB), the
allocator's rounding and fragmentation, cuBLAS/cuDNN workspaces, kernels' internal scratch.

Modelled, not run: attention is SDPA's flash kernel (bf16/fp16) or memory-efficient kernel
(fp32), as CUDA picks them (O(S) memory; the CPU's SDPA would otherwise fall back to the math
kernel's S x S scores); Python reads of tensor values (the text mask's lengths) answer "every text
token is valid", the largest case.

Modes: ``none``, ``model``, ``blocks`` (K blocks on the device), each with and without
``--use-fp8`` (the official FP8 checkpoint, weight-only products), and sequence parallelism
(Ulysses 8): one rank's share (its 1/8 of the image tokens; in attention all tokens of 1/8 of the
heads, the all-to-all's buffers included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GiB = 1 << 30


# ---- the live-bytes tracker ---------------------------------------------------------------------

class LiveBytes(TorchDispatchMode):
    """Live storage bytes per device type, their peaks, and the op (and module) at each peak.

    Every tensor an op returns is counted once per storage (views share it) until its storage is
    freed; tensors that exist before the mode starts (weights, inputs) are counted with
    :meth:`track`. ``stage`` labels the peaks (:meth:`start_stage` begins a new one).
    """

    def __init__(self):
        super().__init__()
        self.live: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.peak_op: dict[str, str] = {}
        self._refs: dict[int, weakref.ref] = {}
        self.where: list[str] = []  # the module path now running (see module_names)

    def track(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._count(t, "(existing)")

    def _count(self, t: torch.Tensor, op: str) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        ref = self._refs.get(key)
        if ref is not None and ref() is storage:
            return
        device, nbytes = t.device.type, storage.nbytes()

        def freed(_, key=key, device=device, nbytes=nbytes):
            self.live[device] -= nbytes
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)
        self.live[device] += nbytes
        if self.live[device] > self.peak[device]:
            self.peak[device] = self.live[device]
            self.peak_op[device] = op + (f" in {self.where[-1]}" if self.where else "")

    def start_stage(self) -> None:
        """Peaks from here on start at what is live now."""
        self.peak = defaultdict(int, self.live)
        self.peak_op = {d: "(held from before)" for d in self.live}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket.__name__)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t, name)
        return out


@contextlib.contextmanager
def module_names(tracker: LiveBytes, roots: dict[str, torch.nn.Module]) -> Iterator[None]:
    """While active, ``tracker.where`` names the innermost running module (``dit.single_blocks.3``)."""
    names = {id(m): f"{root}.{n}" if n else root for root, model in roots.items()
             for n, m in model.named_modules()}

    def enter(module, args):
        tracker.where.append(names.get(id(module), type(module).__name__))

    def leave(module, args, output):
        if tracker.where:
            tracker.where.pop()

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(enter),
               torch.nn.modules.module.register_module_forward_hook(leave, always_call=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
