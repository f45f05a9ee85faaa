"""The offload modes that move whole components or single layers: ``none``, ``model``,
``sequential`` (see :mod:`hyvideo.runtime.offload.config` for what each does), and the small
tensor-moving helpers the block swap engine shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from hyvideo import compat
from hyvideo.runtime.offload.arena import HostArena
from hyvideo.runtime.offload.config import OffloadConfig

_CPU = torch.device("cpu")


def component_modules(component) -> list[nn.Module]:
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


def own_tensors(module: nn.Module) -> list[tuple[str, bool]]:
    """(name, is_parameter) of the tensors ``module`` holds itself (not its children's)."""
    names = [(n, True) for n, p in module._parameters.items() if p is not None]
    return names + [(n, False) for n, b in module._buffers.items() if b is not None]


def get_tensor(module: nn.Module, name: str, is_param: bool) -> torch.Tensor:
    tensor = getattr(module, name)
    return tensor.data if is_param else tensor


def set_tensor(module: nn.Module, name: str, is_param: bool, tensor: torch.Tensor) -> None:
    if is_param:
        getattr(module, name).data = tensor
    else:
        setattr(module, name, tensor)


def to_device(obj, device: torch.device):
    """Tensors in ``obj`` (nested tuples, lists and dicts too) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == device else obj.to(device)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*(to_device(x, device) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def pack_host(roots: list[nn.Module], pinned: bool) -> HostArena:
    """Copy every tensor of ``roots`` into one host arena (a few power-of-two chunks when pinned,
    :mod:`~hyvideo.runtime.offload.arena`) and point each module at its view; a tensor shared by
    several modules is packed once."""
    entries = [(m, n, p) for root in roots for m in root.modules() for n, p in own_tensors(m)]
    index: dict[int, int] = {}
    tensors: list[torch.Tensor] = []
    for m, n, p in entries:
        if id(getattr(m, n)) not in index:
            index[id(getattr(m, n))] = len(tensors)
            tensors.append(get_tensor(m, n, p))
    arena = HostArena([t.numel() * t.element_size() for t in tensors], pinned=pinned)
    with torch.inference_mode(False), torch.no_grad():
        views = [arena.region(i).view(t.dtype).view(t.shape) for i, t in enumerate(tensors)]
        for view, t in zip(views, tensors):
            view.copy_(t)
    for m, n, p in entries:
        set_tensor(m, n, p, views[index[id(getattr(m, n))]])
    return arena


# ---- none and model -----------------------------------------------------------------------------

class NoOffload:
    """Every component on ``device``; :meth:`use` does nothing."""

    def __init__(self, components: dict[str, object], device: torch.device):
        self.components = components
        self.device = torch.device(device)
        for component in components.values():
            for module in component_modules(component):
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
        for module in component_modules(self.components[name]):
            module.to(device)

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        self._move(name, self.device)
        try:
            yield
        finally:
            self._move(name, _CPU)
            compat.empty_cache(self.device)

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
        self.pin = pin_memory and compat.is_accelerator(self.device)
        self._handles: list = []
        self._homes: dict[nn.Module, list[torch.Tensor]] = {}
        self.resident = self.max_resident = 0
        roots = [root for component in components.values() for root in component_modules(component)]
        for root in roots:
            root.to(_CPU)
        # Pinned tensor by tensor, each would be rounded up to a power of two (~49 GiB for the
        # bf16 DiT and text encoders): one arena instead.
        self.arena = pack_host(roots, pinned=True) if self.pin else None

    def _copy(self, home: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":  # a separate copy, so that the bookkeeping is real
            return home.clone()
        return home.to(self.device, non_blocking=home.is_pinned())

    def _before(self, owned: list[tuple[str, bool]], module: nn.Module, args, kwargs):
        if owned and module not in self._homes:
            homes = [get_tensor(module, name, is_param) for name, is_param in owned]
            for (name, is_param), home in zip(owned, homes):
                set_tensor(module, name, is_param, self._copy(home))
            self._homes[module] = homes
            self.resident += 1
            self.max_resident = max(self.max_resident, self.resident)
        return to_device(args, self.device), to_device(kwargs, self.device)

    def _after(self, owned: list[tuple[str, bool]], module: nn.Module, args, output) -> None:
        homes = self._homes.pop(module, None)
        if homes is not None:
            for (name, is_param), home in zip(owned, homes):
                set_tensor(module, name, is_param, home)
            self.resident -= 1

    def _attach(self, root: nn.Module) -> None:
        for module in root.modules():
            owned = own_tensors(module)
            if not owned and module is not root:
                continue
            self._handles.append(module.register_forward_pre_hook(
                partial(self._before, owned), with_kwargs=True))
            if owned:
                self._handles.append(module.register_forward_hook(
                    partial(self._after, owned), always_call=True))

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        for root in component_modules(self.components[name]):
            self._attach(root)
        try:
            yield
        finally:
            self.close()
            compat.empty_cache(self.device)

    def close(self) -> None:
        """Remove every hook and put any weights still on the device back in CPU memory."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, homes in list(self._homes.items()):
            for (name, is_param), home in zip(own_tensors(module), homes):
                set_tensor(module, name, is_param, home)
        self._homes.clear()
        self.resident = 0

    def describe(self) -> str:
        return OffloadConfig("sequential").describe() + f" ({self.device})"


