"""What differs between torch releases and device backends, in one place.

The package supports torch >= :data:`MIN_TORCH`. ``torch.accelerator`` (one API for CUDA, ROCm,
XPU, MPS, MTIA and out-of-tree backends) appeared in torch 2.6 and gained its memory functions
later still; older releases only have the per-backend modules (``torch.cuda``, ``torch.xpu``,
...). Every function here uses ``torch.accelerator`` where it has the function and otherwise the
module of the device's own type (``getattr(torch, device.type)``), so callers never name a
backend and never test the torch version themselves.

Features that need a newer torch are reported, not emulated: :func:`flex_block_mask_problem`
says in one line why flex-attention block masks cannot run here.

Lowest layer of the package: imports nothing from ``hyvideo``; nothing runs at import.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch

__all__ = [
    "MIN_TORCH",
    "accelerator_type",
    "all_gather",
    "autocast",
    "block_mask_from_kv_blocks",
    "current_device",
    "current_stream",
    "device_capability",
    "device_count",
    "empty_cache",
    "flex_block_mask_problem",
    "is_accelerator",
    "max_memory_allocated",
    "memory_allocated",
    "needs_torch",
    "new_stream",
    "reset_peak_memory_stats",
    "sdpa_priority_available",
    "set_device_index",
    "stream_context",
    "synchronize",
    "torch_version",
]

MIN_TORCH = (2, 4)  # keep equal to the torch floor in pyproject.toml (a packaging test checks)
FLEX_SEQ_LENGTHS_TORCH = (2, 6)  # BlockMask.from_kv_blocks(seq_lengths=...)
# torch.compile(dynamic=True) of the transformer blocks reuses its graphs for a new token count
# from 2.6 on; 2.4 and 2.5 give the same numbers but compile again for each new size.
DYNAMIC_COMPILE_TORCH = (2, 6)
SDPA_PRIORITY_TORCH = (2, 6)  # sdpa_kernel(..., set_priority=True): SDPA's kernels tried in a given order

DeviceLike = torch.device | str | int | None


def torch_version() -> tuple[int, int]:
    """(major, minor) of the running torch (``2.5.1+cu124`` -> (2, 5))."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def needs_torch(feature: str, minimum: tuple[int, int]) -> str:
    """The one-line reason a feature is off: what it needs and what is installed."""
    return (f"{feature} needs torch >= {minimum[0]}.{minimum[1]}; "
            f"this is torch {torch.__version__}")


# ---- which accelerator ------------------------------------------------------------------------

def _accelerator_api() -> ModuleType | None:
    return getattr(torch, "accelerator", None)


def _legacy_backends() -> Iterator[tuple[ModuleType, Callable[[], bool]]]:
    """(device module, is_available) for torch releases without ``torch.accelerator``, in the
    order ``torch.accelerator`` itself prefers them (only one is available on a machine)."""
    yield torch.cuda, torch.cuda.is_available  # CUDA and ROCm
    for name in ("mtia", "xpu"):
        module = getattr(torch, name, None)
        if module is not None and hasattr(module, "is_available"):
            yield module, module.is_available
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and hasattr(torch, "mps"):
        yield torch.mps, mps.is_available
    custom = torch._C._get_privateuse1_backend_name()  # e.g. an out-of-tree NPU backend
    module = getattr(torch, custom, None)
    if module is not None and hasattr(module, "is_available"):
        yield module, module.is_available


def accelerator_type() -> str | None:
    """The device type of this machine's accelerator (for example the one of ``torch.cuda``,
    also on ROCm), or None on a CPU-only machine."""
    api = _accelerator_api()
    if api is not None:
        return api.current_accelerator().type if api.is_available() else None
    for module, available in _legacy_backends():
        if available():
            return module.__name__.rpartition(".")[2]
    return None


def is_accelerator(device: torch.device | str) -> bool:
    """Whether ``device`` is on this machine's accelerator (where streams and pinning apply)."""
    return accelerator_type() is not None and torch.device(device).type == accelerator_type()


def _module(device_type: str) -> ModuleType:
    """The per-backend module of a device type (``torch.<type>``)."""
    module = getattr(torch, device_type, None)
    if module is None:
        raise ValueError(f"torch {torch.__version__} has no module for device type {device_type!r}")
    return module


def _device(device: DeviceLike) -> torch.device:
    """``device`` as a torch.device; None or a bare index means the current accelerator device."""
    if device is None or isinstance(device, int):
        acc = accelerator_type()
        if acc is None:
            return torch.device("cpu")
        return torch.device(acc, _current_index(acc) if device is None else device)
    return torch.device(device)


def _current_index(device_type: str) -> int:
    api = _accelerator_api()
    if api is not None and hasattr(api, "current_device_index"):
        return api.current_device_index()
    module = _module(device_type)
    return module.current_device() if hasattr(module, "current_device") else 0


def current_device() -> torch.device:
    """The current accelerator device (with its index), or the CPU."""
    return _device(None)


def device_count() -> int:
    """Number of accelerator devices (0 on a CPU-only machine)."""
    acc = accelerator_type()
    if acc is None:
        return 0
    api = _accelerator_api()
    return api.device_count() if api is not None else _module(acc).device_count()


def set_device_index(index: int) -> None:
    """Make accelerator ``index`` the current one (the default of new tensors and streams)."""
    acc = accelerator_type()
    if acc is None:
        raise RuntimeError(f"no accelerator: cannot select device index {index}")
    api = _accelerator_api()
    if api is not None and hasattr(api, "set_device_index"):
        api.set_device_index(index)
    else:
        _module(acc).set_device(index)


# ---- synchronisation and memory ---------------------------------------------------------------

def _call(name: str, device: DeviceLike, *, fallback: str | None = None) -> Any:
    """``torch.accelerator.<name>(device)`` where it exists, else ``torch.<type>.<name>(device)``
    (or ``<fallback>``); raises AttributeError when neither exists."""
    dev = _device(device)
    api = _accelerator_api()
    if api is not None and hasattr(api, name) and dev.type == accelerator_type():
        return getattr(api, name)(dev)
    module = _module(dev.type)
    for attr in (name, fallback):
        fn = getattr(module, attr, None) if attr else None
        if fn is not None:
            try:
                return fn(dev)
            except TypeError:  # e.g. torch.mps functions take no device argument
                return fn()
    raise AttributeError(f"torch {torch.__version__} has no {name} for {dev.type}")


def _on_host(device: DeviceLike) -> bool:
    return _device(device).type in ("cpu", "meta")


def synchronize(device: DeviceLike = None) -> None:
    """Wait for the work queued on ``device`` (the current accelerator by default); no-op on
    the CPU."""
    if not _on_host(device):
        _call("synchronize", device)


def memory_allocated(device: DeviceLike = None) -> int | None:
    """Bytes held by tensors on ``device``; None where the backend does not count (the CPU)."""
    if _on_host(device):
        return None
    try:
        return int(_call("memory_allocated", device, fallback="current_allocated_memory"))
    except AttributeError:
        return None


def max_memory_allocated(device: DeviceLike = None) -> int | None:
    """Peak bytes held by tensors on ``device`` since the last reset; None where not counted."""
    if _on_host(device):
        return None
    try:
        return int(_call("max_memory_allocated", device))
    except AttributeError:
        return None


def reset_peak_memory_stats(device: DeviceLike = None) -> None:
    """Start a new peak for :func:`max_memory_allocated`; no-op where peaks are not counted."""
    if _on_host(device):
        return
    with contextlib.suppress(AttributeError):
        _call("reset_peak_memory_stats", device)


def empty_cache(device: DeviceLike = None) -> None:
    """Return the caching allocator's unused blocks to the device; no-op on the CPU."""
    if _on_host(device):
        return
    dev = _device(device)
    api = _accelerator_api()
    if api is not None and hasattr(api, "empty_cache") and dev.type == accelerator_type():
        api.empty_cache()  # takes no device: empties the current accelerator's cache
        return
    fn = getattr(_module(dev.type), "empty_cache", None)
    if fn is not None:
        fn()


# ---- autocast --------------------------------------------------------------------------------

def autocast(device: DeviceLike, dtype: torch.dtype, enabled: bool = True) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type in ``dtype``, as the official sampler wraps the VAE;
    a no-op when not enabled, for float32, or on a device type without autocast (meta)."""
    dev = _device(device)
    available = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.5
    supported = available(dev.type) if available is not None else dev.type in ("cpu", accelerator_type())
    if not enabled or dtype == torch.float32 or not supported:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


# ---- streams (the block-swap engine's side-stream copies) -------------------------------------

def new_stream(device: torch.device | str) -> Any:
    """A new stream on accelerator ``device``. Streams and the events they record have
    ``record_event``, ``wait_event`` and ``wait_stream`` on every supported torch."""
    dev = torch.device(device)
    if _accelerator_api() is not None and hasattr(torch.Stream, "__enter__"):
        return torch.Stream(device=dev)
    return _module(dev.type).Stream(device=dev)


def current_stream(device: torch.device | str) -> Any:
    """The stream kernels on ``device`` are queued on now."""
    dev = torch.device(device)
    api = _accelerator_api()
    if api is not None and hasattr(api, "current_stream"):
        return api.current_stream(dev)
    return _module(dev.type).current_stream(dev)


def stream_context(stream: Any) -> contextlib.AbstractContextManager:
    """``with stream_context(s):`` queues the enclosed work on ``s`` (newer torch streams are
    context managers themselves; older ones go through ``torch.<type>.stream(s)``)."""
    if hasattr(type(stream), "__enter__"):
        return stream
    return _module(stream.device.type).stream(stream)


# ---- device capability and attention kernels ---------------------------------------------------

def device_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability ``(major, minor)`` of ``device``, from its own backend module.

    None on the CPU and meta devices, where the backend has no ``get_device_capability`` or cannot
    answer, and on a ROCm build: HIP reports its gfx version through the same call (MI300 says
    9.4), which is no CUDA capability. Only ``device.type`` is read.
    """
    if device.type in ("cpu", "meta") or torch.version.hip is not None:
        return None
    get_capability = getattr(getattr(torch, device.type, None), "get_device_capability", None)
    if get_capability is None:
        return None
    try:
        capability = get_capability(device)
    except (RuntimeError, AssertionError, ValueError):
        return None
    return capability if isinstance(capability, tuple) else None


@functools.cache
def sdpa_priority_available() -> bool:
    """Whether SDPA's kernels can be put in an order (``sdpa_kernel(set_priority=...)``, torch >=
    :data:`SDPA_PRIORITY_TORCH`)."""
    from torch.nn.attention import sdpa_kernel

    return "set_priority" in inspect.signature(sdpa_kernel).parameters


# ---- flex attention ---------------------------------------------------------------------------

@functools.cache
def flex_block_mask_problem() -> str | None:
    """Why flex-attention block masks with explicit ``seq_lengths`` cannot be built with this
    torch (one line), or None when they can."""
    try:
        from torch.nn.attention.flex_attention import BlockMask
    except ImportError:
        return needs_torch("flex attention (torch.nn.attention.flex_attention)", FLEX_SEQ_LENGTHS_TORCH)
    if "seq_lengths" not in inspect.signature(BlockMask.from_kv_blocks).parameters:
        return needs_torch("flex attention block masks (BlockMask.from_kv_blocks(seq_lengths=...))",
                           FLEX_SEQ_LENGTHS_TORCH)
    return None


def block_mask_from_kv_blocks(kv_num: torch.Tensor, kv_idx: torch.Tensor,
                              full_num: torch.Tensor | None, full_idx: torch.Tensor | None, *,
                              block_size: int, mask_mod: Callable,
                              seq_lengths: tuple[int, int]) -> Any:
    """``BlockMask.from_kv_blocks`` for a sequence that need not be a multiple of the block
    size; raises RuntimeError (:func:`flex_block_mask_problem`) on a torch that cannot."""
    problem = flex_block_mask_problem()
    if problem is not None:
        raise RuntimeError(problem)
    from torch.nn.attention.flex_attention import BlockMask

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=mask_mod, seq_lengths=seq_lengths)


# ---- collectives ------------------------------------------------------------------------------

def all_gather(tensor: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """``torch.distributed.all_gather`` of ``tensor`` into new buffers, one per rank.

    The buffers are made outside inference mode: gloo (torch 2.4 and 2.5 at least) copies the
    received data into them on its own thread, where inference mode is off and writing into an
    inference tensor raises. Ordinary tensors are accepted everywhere else.
    """
    import torch.distributed as dist

    with torch.inference_mode(False):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts
