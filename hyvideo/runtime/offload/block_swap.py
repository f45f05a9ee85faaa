"""``--offload blocks``: the block swap engine (K device slots, side-stream prefetch from pinned
CPU memory -- one host arena for all blocks, :mod:`~hyvideo.runtime.offload.arena`; see
:mod:`hyvideo.runtime.offload.config`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from hyvideo import compat
from hyvideo.dit.model import transformer_blocks
from hyvideo.runtime.offload.arena import HostArena, aligned
from hyvideo.runtime.offload.modes import ModelOffload, get_tensor, own_tensors, set_tensor

log = logging.getLogger(__name__)

_CPU = torch.device("cpu")


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
        return all(get_tensor(m, n, p).data_ptr() == v.data_ptr() and get_tensor(m, n, p).dtype == v.dtype
                   and get_tensor(m, n, p).shape == v.shape for (m, n, p), v in zip(now, self.views))

    def point_home(self) -> None:
        for (module, name, is_param), view in zip(self.entries, self.views):
            set_tensor(module, name, is_param, view)


def _view(buffer: torch.Tensor, offset: int, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
    nbytes = shape.numel() * dtype.itemsize
    return buffer[offset:offset + nbytes].view(dtype).view(shape)


def _block_entries(block: nn.Module) -> list[tuple[nn.Module, str, bool]]:
    seen, entries = set(), []
    for module in block.modules():
        for name, is_param in own_tensors(module):
            key = id(getattr(module, name))
            if key not in seen:  # a tensor shared inside the block is packed once
                seen.add(key)
                entries.append((module, name, is_param))
    return entries


def _plan(block: nn.Module) -> tuple[list, list[torch.Tensor], list[int], int]:
    """A block's entries, their tensors, each one's offset in a packed buffer, and its size."""
    entries = _block_entries(block)
    tensors = [get_tensor(m, n, p) for m, n, p in entries]
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += aligned(t.numel() * t.element_size())
    return entries, tensors, offsets, total


def _fill(entries, tensors: list[torch.Tensor], offsets: list[int], home: torch.Tensor) -> BlockLayout:
    """Copy the tensors into ``home`` (uint8, exactly their packed size) and point the block at it."""
    with torch.inference_mode(False), torch.no_grad():
        layout = BlockLayout(entries, offsets, home)
        layout.views = [_view(home, off, t.dtype, t.shape) for off, t in zip(offsets, tensors)]
        for view, t in zip(layout.views, tensors):
            if view.data_ptr() != t.data_ptr():
                view.copy_(t)
    layout.point_home()
    return layout


def pack_blocks(blocks: Sequence[nn.Module], pin_memory: bool) -> tuple[list[BlockLayout], HostArena]:
    """Copy every block's tensors into one host arena (a few power-of-two chunks when pinned:
    :mod:`~hyvideo.runtime.offload.arena`) and point each block at its views."""
    plans = [_plan(b) for b in blocks]
    arena = HostArena([total for *_, total in plans], pinned=pin_memory)
    layouts = [_fill(entries, tensors, offsets, arena.region(i))
               for i, (entries, tensors, offsets, _) in enumerate(plans)]
    return layouts, arena


def repack_block(block: nn.Module, old: BlockLayout, pin_memory: bool) -> BlockLayout:
    """``block`` again, after some of its tensors were replaced (LoRA, reload): into its old
    region when the packing is unchanged, else into a buffer of its own."""
    entries, tensors, offsets, total = _plan(block)
    same = offsets == old.offsets and [(t.dtype, t.shape) for t in tensors] == [(v.dtype, v.shape) for v in old.views]
    if same and total == old.nbytes:
        return _fill(entries, tensors, offsets, old.home)
    log.info("block swap: a block's tensors changed shape; it gets a host buffer of its own")
    return _fill(entries, tensors, offsets, HostArena([total], pinned=pin_memory).region(0))


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
        self.stream = compat.new_stream(device)

    def _compute(self):
        return compat.current_stream(self.device)

    def start(self) -> None:
        # Fresh slots may reuse memory that kernels already queued on the compute stream still
        # read: the side stream must not write before those finish.
        self.stream.wait_stream(self._compute())

    def copy(self, dst: torch.Tensor, src: torch.Tensor, after=None):
        if after is not None:  # the slot's previous block has finished on the compute stream
            self.stream.wait_event(after)
        with compat.stream_context(self.stream):
            dst.copy_(src, non_blocking=True)
        return self.stream.record_event()

    def wait(self, ready) -> None:
        if ready is not None:
            self._compute().wait_event(ready)

    def done(self):
        return self._compute().record_event()

    def join(self) -> None:
        self._compute().wait_stream(self.stream)


def copy_engine(device: torch.device) -> SyncCopies | StreamCopies:
    if not compat.is_accelerator(device):
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
        self.pin = pin_memory and compat.is_accelerator(self.device)
        self.layouts, self.arena = pack_blocks(self.blocks, self.pin)
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
                self.layouts[i] = repack_block(block, self.layouts[i], self.pin)
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
            set_tensor(module, name, is_param, view)
        self._owner[slot], self._slot_of[j] = j, slot
        if self.trace is not None:
            self.trace.append(("load", j, slot))

    def _evict(self, j: int) -> None:
        slot = self._slot_of.pop(j)
        self._owner[slot] = None
        self._ready.pop(j, None)
        self.layouts[j].point_home()


class BlockSwapOffload(ModelOffload):
    """``blocks`` mode: the DiT's transformer blocks swapped K at a time, the rest as ``model``."""

    def __init__(self, components: dict[str, object], device: torch.device, blocks_on_device: int,
                 *, pin_memory: bool = True):
        self.swaps = {name: BlockSwap(transformer_blocks(c), torch.device(device), blocks_on_device,
                                      pin_memory=pin_memory)
                      for name, c in components.items() if transformer_blocks(c)}
        if not self.swaps:
            raise ValueError("offload blocks needs a DiT among the components (one with "
                             "double_blocks and single_blocks); use --offload model otherwise")
        super().__init__(components, device)  # every component to the CPU (the DiT by _move)

    def _move(self, name: str, device: torch.device) -> None:
        if name not in self.swaps:
            return super()._move(name, device)
        dit = self.components[name]
        for child_name, child in dit.named_children():  # everything but the blocks
            if child_name not in ("double_blocks", "single_blocks"):
                child.to(device)
        for tensor_name, is_param in own_tensors(dit):
            set_tensor(dit, tensor_name, is_param, get_tensor(dit, tensor_name, is_param).to(device))

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
            compat.empty_cache(self.device)

    def close(self) -> None:
        for swap in self.swaps.values():
            swap.close()

    def describe(self) -> str:
        swap = next(iter(self.swaps.values()))
        return (f"offload blocks: {swap.k} of the DiT's {len(swap.blocks)} transformer blocks at a "
                f"time on {self.device}, the others in {'pinned ' if swap.pin else ''}CPU memory, "
                "prefetched ahead of use; text encoders and VAE move whole for their stage")
