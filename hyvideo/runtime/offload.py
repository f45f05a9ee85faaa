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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import torch
from torch import nn

log = logging.getLogger(__name__)

MODES = ("none", "model", "sequential", "blocks")
_CPU = torch.device("cpu")
_ALIGN = 512  # bytes; every tensor in a packed block buffer starts at a multiple of this


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

    @classmethod
    def from_flags(cls, offload: str | None = None, *, use_cpu_offload: bool = False,
                   blocks_on_device: int = 2, pin_memory: bool = True) -> OffloadConfig:
        """``--offload MODE`` and the official ``--use-cpu-offload`` (an alias of ``model``)."""
        if use_cpu_offload and offload not in (None, "model"):
            raise ValueError(f"--use-cpu-offload means --offload model; it conflicts with "
                             f"--offload {offload}: give only one of them")
        mode = "model" if use_cpu_offload else (offload or "none")
        return cls(mode, blocks_on_device, pin_memory)

    def load_device(self, device: torch.device | str) -> torch.device:
        """Where the components should be loaded: the device for ``none``, else the CPU."""
        return torch.device(device) if self.mode == "none" else _CPU

    def describe(self) -> str:
        """One line saying what the mode does."""
        return {
            "none": "offload none: every component stays on the device",
            "model": "offload model (= --use-cpu-offload): components live in CPU memory; the text "
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


def offload_components(components: dict[str, object], device: torch.device | str,
                       config: OffloadConfig) -> Offload:
    """Wrap ``components`` (``{"text_encoders": ..., "dit": ..., "vae": ...}``) for ``config.mode``."""
    device = torch.device(device)
    if config.mode == "none":
        return NoOffload(components, device)
    if config.mode == "model":
        return ModelOffload(components, device)
    if config.mode == "sequential":
        return SequentialOffload(components, device, pin_memory=config.pin_memory)
    return BlockSwapOffload(components, device, config.blocks_on_device, pin_memory=config.pin_memory)


# ---- small helpers ------------------------------------------------------------------------------

def is_accelerator(device: torch.device) -> bool:
    """Whether ``device`` is the current accelerator (where pinning and streams apply)."""
    if device.type in ("cpu", "meta") or not torch.accelerator.is_available():
        return False
    return torch.accelerator.current_accelerator().type == device.type


def _modules(component) -> list[nn.Module]:
    if isinstance(component, nn.Module):
        return [component]
    # The text encoders are a small object holding two models (``llm.model``, ``clip.model``).
    found = []
    for part in vars(component).values():
        if isinstance(part, nn.Module):
            found.append(part)
        elif hasattr(part, "model") and isinstance(part.model, nn.Module):
            found.append(part.model)
    return found


def _own_tensors(module: nn.Module) -> list[tuple[str, bool]]:
    """(name, is_parameter) of the tensors ``module`` holds itself (not its children's)."""
    names = [(n, True) for n, p in module._parameters.items() if p is not None]
    return names + [(n, False) for n, b in module._buffers.items() if b is not None]


def _get(module: nn.Module, name: str, is_param: bool) -> torch.Tensor:
    tensor = getattr(module, name)
    return tensor.data if is_param else tensor


def _set(module: nn.Module, name: str, is_param: bool, tensor: torch.Tensor) -> None:
    if is_param:
        getattr(module, name).data = tensor
    else:
        setattr(module, name, tensor)


def _to_device(obj, device: torch.device):
    """Tensors in ``obj`` (nested tuples, lists and dicts too) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == device else obj.to(device)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*(_to_device(x, device) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _empty_cache(device: torch.device) -> None:
    if is_accelerator(device):
        torch.accelerator.empty_cache()


# ---- none and model -----------------------------------------------------------------------------

class NoOffload:
    """Every component on ``device``; :meth:`use` does nothing."""

    def __init__(self, components: dict[str, object], device: torch.device):
        self.components = components
        self.device = torch.device(device)
        for component in components.values():
            for module in _modules(component):
                module.to(self.device)

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        yield

    def describe(self) -> str:
        return OffloadConfig("none").describe() + f" ({self.device})"

    def close(self) -> None:
        pass


class ModelOffload:
    """Moves named components to ``device`` inside :meth:`use` and back to the CPU after."""

    def __init__(self, components: dict[str, object], device: torch.device):
        self.components = components
        self.device = torch.device(device)
        for name in components:
            self._move(name, _CPU)

    def _move(self, name: str, device: torch.device) -> None:
        for module in _modules(self.components[name]):
            module.to(device)

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        self._move(name, self.device)
        try:
            yield
        finally:
            self._move(name, _CPU)
            _empty_cache(self.device)

    def describe(self) -> str:
        return OffloadConfig("model").describe() + f" ({self.device})"

    def close(self) -> None:
        pass


# ---- sequential ---------------------------------------------------------------------------------

class SequentialOffload:
    """Each module's own weights visit the device only while that module runs.

    ``resident`` counts the modules whose weights are on the device now and ``max_resident`` the
    most seen at once (nested modules that own weights, e.g. a norm inside a custom layer, can
    make it exceed 1).
    """

    def __init__(self, components: dict[str, object], device: torch.device, *, pin_memory: bool = True):
        self.components = components
        self.device = torch.device(device)
        self.pin = pin_memory and is_accelerator(self.device)
        self._handles: list = []
        self._homes: dict[nn.Module, list[torch.Tensor]] = {}
        self.resident = self.max_resident = 0
        with torch.no_grad():
            for component in components.values():
                for root in _modules(component):
                    root.to(_CPU)
                    if self.pin:
                        for module in root.modules():
                            for name, is_param in _own_tensors(module):
                                _set(module, name, is_param, _get(module, name, is_param).pin_memory())

    def _copy(self, home: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":  # a separate copy, so that the bookkeeping is real
            return home.clone()
        return home.to(self.device, non_blocking=home.is_pinned())

    def _before(self, owned: list[tuple[str, bool]], module: nn.Module, args, kwargs):
        if owned and module not in self._homes:
            homes = [_get(module, name, is_param) for name, is_param in owned]
            for (name, is_param), home in zip(owned, homes):
                _set(module, name, is_param, self._copy(home))
            self._homes[module] = homes
            self.resident += 1
            self.max_resident = max(self.max_resident, self.resident)
        return _to_device(args, self.device), _to_device(kwargs, self.device)

    def _after(self, owned: list[tuple[str, bool]], module: nn.Module, args, output) -> None:
        homes = self._homes.pop(module, None)
        if homes is not None:
            for (name, is_param), home in zip(owned, homes):
                _set(module, name, is_param, home)
            self.resident -= 1

    def _attach(self, root: nn.Module) -> None:
        for module in root.modules():
            owned = _own_tensors(module)
            if not owned and module is not root:
                continue
            self._handles.append(module.register_forward_pre_hook(
                partial(self._before, owned), with_kwargs=True))
            if owned:
                self._handles.append(module.register_forward_hook(
                    partial(self._after, owned), always_call=True))

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        for root in _modules(self.components[name]):
            self._attach(root)
        try:
            yield
        finally:
            self.close()
            _empty_cache(self.device)

    def close(self) -> None:
        """Remove every hook and put any weights still on the device back in CPU memory."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, homes in list(self._homes.items()):
            for (name, is_param), home in zip(_own_tensors(module), homes):
                _set(module, name, is_param, home)
        self._homes.clear()
        self.resident = 0

    def describe(self) -> str:
        return OffloadConfig("sequential").describe() + f" ({self.device})"


# ---- blocks: the block swap engine --------------------------------------------------------------

@dataclass
class BlockLayout:
    """One block's tensors packed in one flat CPU buffer: what each entry is and where it lives."""

    entries: list[tuple[nn.Module, str, bool]]  # (module, name, is_parameter)
    offsets: list[int]
    home: torch.Tensor  # uint8 [nbytes], pinned when streaming to an accelerator
    views: list[torch.Tensor] = field(default_factory=list)  # each entry, viewed into ``home``

    @property
    def nbytes(self) -> int:
        return self.home.numel()

    def views_into(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        """Each entry viewed at its offset in ``buffer`` (a device slot)."""
        return [_view(buffer, off, v.dtype, v.shape) for off, v in zip(self.offsets, self.views)]

    def matches(self, block: nn.Module) -> bool:
        """Whether ``block``'s tensors are still exactly these views (else it must be repacked)."""
        now = _block_entries(block)
        if [(id(m), n) for m, n, _ in now] != [(id(m), n) for m, n, _ in self.entries]:
            return False
        return all(_get(m, n, p).data_ptr() == v.data_ptr() and _get(m, n, p).dtype == v.dtype
                   and _get(m, n, p).shape == v.shape for (m, n, p), v in zip(now, self.views))

    def point_home(self) -> None:
        for (module, name, is_param), view in zip(self.entries, self.views):
            _set(module, name, is_param, view)


def _view(buffer: torch.Tensor, offset: int, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
    nbytes = shape.numel() * dtype.itemsize
    return buffer[offset:offset + nbytes].view(dtype).view(shape)


def _block_entries(block: nn.Module) -> list[tuple[nn.Module, str, bool]]:
    seen, entries = set(), []
    for module in block.modules():
        for name, is_param in _own_tensors(module):
            key = id(getattr(module, name))
            if key not in seen:  # a tensor shared inside the block is packed once
                seen.add(key)
                entries.append((module, name, is_param))
    return entries


def pack_block(block: nn.Module, pin_memory: bool) -> BlockLayout:
    """Copy every tensor of ``block`` into one (pinned) CPU buffer and point the block at it."""
    entries = _block_entries(block)
    tensors = [_get(m, n, p) for m, n, p in entries]
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    with torch.inference_mode(False), torch.no_grad():
        home = torch.empty(total, dtype=torch.uint8, pin_memory=pin_memory)
        layout = BlockLayout(entries, offsets, home)
        layout.views = [_view(home, off, t.dtype, t.shape) for off, t in zip(offsets, tensors)]
        for view, t in zip(layout.views, tensors):
            view.copy_(t)
    layout.point_home()
    return layout


class SyncCopies:
    """Copies in the order issued on the current stream (the CPU, or no usable side stream)."""

    def start(self) -> None:
        pass

    def copy(self, dst: torch.Tensor, src: torch.Tensor, after=None) -> None:
        dst.copy_(src)  # no token: the copy is complete before anything else is issued

    def wait(self, ready) -> None:
        pass

    def done(self):
        return None

    def join(self) -> None:
        pass


class StreamCopies:
    """Host-to-device copies on a side stream, ordered against the compute stream by events."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.Stream(device=device)

    def _compute(self) -> torch.Stream:
        return torch.accelerator.current_stream(self.device)

    def start(self) -> None:
        # Fresh slots may reuse memory that kernels already queued on the compute stream still
        # read: the side stream must not write before those finish.
        self.stream.wait_stream(self._compute())

    def copy(self, dst: torch.Tensor, src: torch.Tensor, after=None) -> torch.Event:
        if after is not None:  # the slot's previous block has finished on the compute stream
            self.stream.wait_event(after)
        with self.stream:
            dst.copy_(src, non_blocking=True)
        return self.stream.record_event()

    def wait(self, ready: torch.Event | None) -> None:
        if ready is not None:
            self._compute().wait_event(ready)

    def done(self) -> torch.Event:
        return self._compute().record_event()

    def join(self) -> None:
        self._compute().wait_stream(self.stream)


def copy_engine(device: torch.device) -> SyncCopies | StreamCopies:
    if not is_accelerator(device):
        return SyncCopies()
    try:
        return StreamCopies(device)
    except RuntimeError as err:  # a backend without streams/events: same results, no overlap
        log.info("block swap copies without a side stream on %s: %s", device, err)
        return SyncCopies()


class BlockSwap:
    """K device slots for a sequence of blocks run in order, cyclically (one DiT step = one cycle).

    Built once (packs the blocks into CPU buffers); :meth:`active` allocates the slots and
    registers the hooks, and removes them on exit. ``trace`` (a list, when set) records
    ``("load", block, slot)`` and ``("run", block, resident blocks)`` events.
    """

    def __init__(self, blocks: Sequence[nn.Module], device: torch.device, blocks_on_device: int,
                 *, pin_memory: bool = True, copies: SyncCopies | StreamCopies | None = None):
        if not blocks:
            raise ValueError("block swap needs at least one block")
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.k = min(blocks_on_device, len(self.blocks))
        self.pin = pin_memory and is_accelerator(self.device)
        self.layouts = [pack_block(b, self.pin) for b in self.blocks]
        self.copies = copies if copies is not None else copy_engine(self.device)
        self.trace: list[tuple] | None = None
        self._slots: list[torch.Tensor] | None = None
        self._handles: list = []

    def resident(self) -> list[int]:
        """The blocks that have (or are being copied into) a device slot now."""
        return sorted(self._slot_of) if self._slots is not None else []

    @contextmanager
    def active(self) -> Iterator[None]:
        self._activate()
        try:
            yield
        finally:
            self.close()

    def _activate(self) -> None:
        if self._slots is not None:
            raise RuntimeError("this block swap is already active: leave the first use() before "
                               "entering another")
        for i, block in enumerate(self.blocks):
            if not self.layouts[i].matches(block):  # weights replaced since (LoRA, reload)
                self.layouts[i] = pack_block(block, self.pin)
        size = max(layout.nbytes for layout in self.layouts)
        with torch.inference_mode(False):
            self._slots = [torch.empty(size, dtype=torch.uint8, device=self.device) for _ in range(self.k)]
        self._owner: list[int | None] = [None] * self.k
        self._slot_of: dict[int, int] = {}
        self._ready: dict[int, object] = {}
        self._done: list[object] = [None] * self.k
        self._last_used = [0] * self.k
        self._clock = 0
        self._views: dict[tuple[int, int], list[torch.Tensor]] = {}
        self.copies.start()
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(partial(self._before, i)))
            self._handles.append(block.register_forward_hook(partial(self._after, i), always_call=True))

    def close(self) -> None:
        """Remove the hooks, point every block back at its CPU buffer and free the slots."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._slots is None:
            return
        self.copies.join()  # no copy may still write into a slot once it is freed
        for j in list(self._slot_of):
            self._evict(j)
        self._slots, self._views = None, {}
        self._ready, self._done = {}, [None] * self.k

    def _window(self, i: int) -> list[int]:
        n = len(self.blocks)
        return [(i + d) % n for d in range(self.k)]

    def _before(self, i: int, module: nn.Module, args) -> None:
        window = self._window(i)
        if i not in self._slot_of:  # not prefetched (first block of the loop, or out of order)
            self._load(i, window)
        self.copies.wait(self._ready.pop(i, None))
        for j in window[1:]:
            if j not in self._slot_of:
                self._load(j, window)
        if self.trace is not None:
            self.trace.append(("run", i, tuple(self.resident())))

    def _after(self, i: int, module: nn.Module, args, output) -> None:
        slot = self._slot_of.get(i)
        if slot is not None:
            self._done[slot] = self.copies.done()
            self._clock += 1
            self._last_used[slot] = self._clock

    def _free_slot(self, window: list[int]) -> int:
        for slot, owner in enumerate(self._owner):
            if owner is None:
                return slot
        candidates = [s for s, owner in enumerate(self._owner) if owner not in window]
        return min(candidates, key=self._last_used.__getitem__)  # least recently used

    def _load(self, j: int, window: list[int]) -> None:
        slot = self._free_slot(window)
        if self._owner[slot] is not None:
            self._evict(self._owner[slot])
        layout = self.layouts[j]
        views = self._views.get((j, slot))
        if views is None:
            with torch.inference_mode(False):
                views = self._views[(j, slot)] = layout.views_into(self._slots[slot])
        self._ready[j] = self.copies.copy(self._slots[slot][:layout.nbytes], layout.home,
                                          after=self._done[slot])
        self._done[slot] = None
        for (module, name, is_param), view in zip(layout.entries, views):
            _set(module, name, is_param, view)
        self._owner[slot], self._slot_of[j] = j, slot
        if self.trace is not None:
            self.trace.append(("load", j, slot))

    def _evict(self, j: int) -> None:
        slot = self._slot_of.pop(j)
        self._owner[slot] = None
        self._ready.pop(j, None)
        self.layouts[j].point_home()


def transformer_blocks(module: object) -> list[nn.Module]:
    """The DiT's blocks in the order they run (double then single), or [] for other components."""
    lists = [getattr(module, name, None) for name in ("double_blocks", "single_blocks")]
    if not all(isinstance(blocks, nn.ModuleList) for blocks in lists):
        return []
    return [block for blocks in lists for block in blocks]


class BlockSwapOffload(ModelOffload):
    """``blocks`` mode: the DiT's transformer blocks swapped K at a time, the rest as ``model``."""

    def __init__(self, components: dict[str, object], device: torch.device, blocks_on_device: int,
                 *, pin_memory: bool = True):
        self.components = components
        self.device = torch.device(device)
        self.swaps = {name: BlockSwap(transformer_blocks(c), self.device, blocks_on_device,
                                      pin_memory=pin_memory)
                      for name, c in components.items() if transformer_blocks(c)}
        if not self.swaps:
            raise ValueError("offload blocks needs a DiT among the components (one with "
                             "double_blocks and single_blocks); use --offload model otherwise")
        for name in components:
            self._move(name, _CPU)

    def _move(self, name: str, device: torch.device) -> None:
        if name not in self.swaps:
            return super()._move(name, device)
        dit = self.components[name]
        for child_name, child in dit.named_children():  # everything but the blocks
            if child_name not in ("double_blocks", "single_blocks"):
                child.to(device)
        for tensor_name, is_param in _own_tensors(dit):
            _set(dit, tensor_name, is_param, _get(dit, tensor_name, is_param).to(device))

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        if name not in self.swaps:
            with super().use(name):
                yield
            return
        self._move(name, self.device)
        try:
            with self.swaps[name].active():
                yield
        finally:
            self._move(name, _CPU)
            _empty_cache(self.device)

    def close(self) -> None:
        for swap in self.swaps.values():
            swap.close()

    def describe(self) -> str:
        swap = next(iter(self.swaps.values()))
        return (f"offload blocks: {swap.k} of the DiT's {len(swap.blocks)} transformer blocks at a "
                f"time on {self.device}, the others in {'pinned ' if swap.pin else ''}CPU memory, "
                "prefetched ahead of use; text encoders and VAE move whole for their stage")
