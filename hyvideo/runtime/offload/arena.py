"""Host memory for offloaded weights: a few large allocations sliced into per-tensor views.

PyTorch's pinned-memory allocator (the caching host allocator behind ``pin_memory=True``) rounds
every allocation up to a power of two so that freed blocks can be reused: a 648 MiB double block
pinned on its own takes 1 GiB, and pinning each of the DiT's 60 blocks (or each of its ~600
tensors, as ``sequential`` did) costs ~40 (~49) GiB of RAM for ~24 GiB of weights. Packed into
chunks whose sizes are themselves powers of two, the rounding costs only the unfilled end of each
chunk. Unpinned memory is not rounded: it is one allocation of exactly the sum.
"""

from __future__ import annotations

import torch

ALIGN = 512  # bytes; every packed item starts at a multiple of this


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def pow2_ceil(n: int) -> int:
    """The size the pinned allocator really takes for a request of ``n`` bytes."""
    return 1 << max(n - 1, 0).bit_length()


def _first_fit(sizes: list[int], capacity: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Largest first, each item into the first chunk with room: (fill per chunk, place per item)."""
    fills: list[int] = []
    places: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        chunk = next((c for c, fill in enumerate(fills) if fill + sizes[i] <= capacity), len(fills))
        if chunk == len(fills):
            fills.append(0)
        places[i] = (chunk, fills[chunk])
        fills[chunk] += sizes[i]
    return fills, places


def plan_chunks(sizes: list[int], pinned: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """Chunk sizes to allocate and, per item, (chunk, byte offset).

    Unpinned: one chunk of exactly the (aligned) sum. Pinned: the chunk capacity, a power of two
    from the largest item up to the whole, that allocates the fewest bytes once every chunk is
    rounded up to a power of two (fewer chunks on a tie).
    """
    sizes = [aligned(s) for s in sizes]
    if not pinned or not sizes:
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        return [sum(sizes)], [(0, off) for off in offsets]
    best = None
    capacity = pow2_ceil(max(sizes))
    while True:
        fills, places = _first_fit(sizes, capacity)
        chunks = [pow2_ceil(f) for f in fills]
        if best is None or (sum(chunks), len(chunks)) < (sum(best[0]), len(best[0])):
            best = (chunks, places)
        if len(fills) == 1:
            return best
        capacity *= 2


def _allocate(nbytes: int, pinned: bool) -> torch.Tensor:
    with torch.inference_mode(False):  # weights are re-pointed at these views outside it too
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)


class HostArena:
    """Host buffers for items of the given byte sizes: ``region(i)`` is item i's uint8 view."""

    def __init__(self, sizes: list[int], *, pinned: bool):
        self.sizes = list(sizes)
        self.pinned = pinned
        capacities, self.places = plan_chunks(self.sizes, pinned)
        self.chunks = [_allocate(c, pinned) for c in capacities]

    @property
    def nbytes(self) -> int:
        """Bytes this arena holds (what the host allocator reserved for it)."""
        return sum(c.numel() for c in self.chunks)

    def region(self, i: int) -> torch.Tensor:
        chunk, offset = self.places[i]
        return self.chunks[chunk][offset:offset + self.sizes[i]]
