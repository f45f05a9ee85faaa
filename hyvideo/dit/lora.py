"""LoRA adapters for the DiT, in the common HunyuanVideo LoRA file formats.

Accepted key formats (``M`` is a module name):

* diffusers / PEFT: ``transformer.M.lora_A.weight`` / ``lora_B.weight`` with diffusers module
  names (``transformer_blocks.0.attn.to_q``); a PEFT folder's ``adapter_config.json`` gives alpha.
* original keys: ``M.lora_A.weight`` / ``lora_B.weight`` with official names
  (``double_blocks.0.img_attn_qkv``), optionally under ``diffusion_model.``.
* ComfyUI / kohya: ``lora_unet_<M with dots as underscores>.lora_down.weight`` / ``lora_up`` /
  ``.alpha`` (official or diffusers names).
* the official HunyuanVideo-I2V effect LoRAs (``train_image2video_lora.py``):
  ``Hunyuan_video_I2V_lora_<M with dots as underscores>.lora_down.weight`` / ``lora_up`` /
  ``.alpha``, merged by the reference's own rule (below).

Every key is resolved to one of our Linear modules by name. diffusers modules that are slices of
one official module (q, k, v of a fused qkv; q, k, v, mlp of a single block's ``linear1``; the
final layer's swapped modulation halves) map to output rows through the same declarative table
that converts checkpoints (:func:`hyvideo.checkpoints.keys.diffusers_module_targets`). The low-rank update
of a module is ``delta W = scale * (alpha / rank) * up @ down`` (alpha/rank only where the file
carries alpha). The official I2V files follow the reference's loader instead
(``hyvideo/utils/lora_utils.py``): ``delta W = scale * up.float() @ down.float()`` with ``alpha``
IGNORED, and the module found by greedily joining underscore pieces until a child module of that
name exists (``double_blocks_0_img_attn_qkv`` -> ``double_blocks.0.img_attn_qkv``).

Two ways to apply: :func:`fuse_lora` merges ``delta W`` into the weights (FP8 layers are
dequantised, updated and requantised with a new per-tensor scale); :func:`attach_lora` keeps it
as a side branch by swapping each target for a :class:`LoRALinear` wrapper (composition; the
scale can then change per call and :func:`detach_loras` restores the plain modules).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hyvideo.checkpoints.keys import ModuleTarget, diffusers_module_targets
from hyvideo.dit.fp8 import FP8Linear, quantize_weight
from hyvideo.checkpoints.reading import CheckpointError, read_json, read_state_dict

log = logging.getLogger(__name__)

_SHOW = 5

# (regex on the key's tail, role): the down (A) and up (B) matrices and alpha.
_ROLES = (
    (re.compile(r"\.(lora_A|lora_down|lora\.down)(\.default)?\.weight$"), "down"),
    (re.compile(r"\.(lora_B|lora_up|lora\.up)(\.default)?\.weight$"), "up"),
    (re.compile(r"\.alpha$"), "alpha"),
)
# Container prefixes stripped from module names, longest first.
_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "unet.")
_KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_")
I2V_LORA_PREFIX = "Hunyuan_video_I2V_lora_"  # the official I2V trainer's key prefix


class LoraError(CheckpointError):
    """A LoRA file that cannot be applied to this model (the message says why)."""


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file and its strength (``--lora PATH[:SCALE]``)."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``"file.safetensors"`` or ``"file.safetensors:0.8"`` (a Windows drive colon is no scale)."""
        path, sep, scale = text.rpartition(":")
        if sep and path:
            try:
                return cls(Path(path), float(scale))
            except ValueError:
                pass
        return cls(Path(text), 1.0)

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass
class LoraWeights:
    """A LoRA resolved against one model: per official module, ``down`` [r, in] and ``up``
    [out, r] with alpha/rank folded into ``up`` and rows placed in official order."""

    name: str
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    unmatched: list[str] = field(default_factory=list)

    def delta(self, module: str) -> torch.Tensor:
        down, up = self.layers[module]
        return up.float() @ down.float()  # [out, in]


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], float | None]:
    """The tensors of a LoRA file (or PEFT folder) and the folder's ``lora_alpha / r`` if any."""
    path = Path(path)
    alpha_scale = None
    if path.is_dir():
        config = path / "adapter_config.json"
        if config.is_file():
            alpha_scale = _peft_alpha_scale(config)
        files = sorted(path.glob("adapter_model.safetensors")) or sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise LoraError(f"LoRA folder {path}: expected one adapter_model.safetensors, found "
                            f"{[f.name for f in files]}")
        path = files[0]
    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    return read_state_dict(path), alpha_scale


def _peft_alpha_scale(config: Path) -> float | None:
    """``lora_alpha / r`` of a PEFT ``adapter_config.json`` (None when it gives neither)."""
    cfg = read_json(config, "a PEFT adapter folder's config")
    alpha, rank = cfg.get("lora_alpha"), cfg.get("r")
    if alpha is None and rank is None:
        return None
    for name, value in (("lora_alpha", alpha), ("r", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise LoraError(f"{config}: {name} must be a positive number, got {value!r}")
    return float(alpha) / float(rank)


def _alpha(name: str, module: str, alpha: torch.Tensor) -> float:
    """A LoRA's ``.alpha``: one finite number."""
    if alpha.numel() != 1:
        raise LoraError(f"{name}: {module}.alpha has shape {tuple(alpha.shape)}; an alpha is one number")
    value = float(alpha.float())
    if not math.isfinite(value):
        raise LoraError(f"{name}: {module}.alpha is {value}, not a finite number")
    return value


def _split_key(key: str) -> tuple[str, str] | None:
    for pattern, role in _ROLES:
        m = pattern.search(key)
        if m:
            return key[:m.start()], role
    return None


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear modules of ``model`` by name (the base of a :class:`LoRALinear` under its name)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[name] = module.base
        elif isinstance(module, nn.Linear) and not name.endswith(".base"):
            out[name] = module
    return out


def _plain(module: nn.Module) -> nn.Linear:
    return module.base if isinstance(module, LoRALinear) else module


def _module_table(model: nn.Module) -> dict[str, ModuleTarget]:
    """Every name a LoRA may use for a Linear of ``model`` -> where it lands."""
    linears = _linears(model)
    hidden = model.config.hidden_size if hasattr(model, "config") else 0
    table: dict[str, ModuleTarget] = {n: ModuleTarget(n) for n in linears}
    table.update(diffusers_module_targets({n: m.out_features for n, m in linears.items()}, hidden))
    # kohya names: dots written as underscores, after lora_unet_ / lora_transformer_.
    table.update({name.replace(".", "_"): target for name, target in list(table.items())})
    return table


def _resolve(module: str, table: dict[str, ModuleTarget]) -> ModuleTarget | None:
    for prefix in _KOHYA_PREFIXES:
        if module.startswith(prefix):
            return table.get(module[len(prefix):])
    for prefix in _PREFIXES:
        if module.startswith(prefix) and module[len(prefix):] in table:
            return table[module[len(prefix):]]
    return table.get(module)


def match_lora(model: nn.Module, state: dict[str, torch.Tensor], *, name: str = "lora",
               alpha_scale: float | None = None) -> LoraWeights:
    """Resolve LoRA tensors against ``model``'s Linear modules.

    Raises :class:`LoraError` when nothing matches (listing example keys) or a matrix has the
    wrong shape for its module (a LoRA made for another model); logs partial matches with counts.
    """
    if any(key.startswith(I2V_LORA_PREFIX) for key in state):
        return match_official_i2v_lora(model, state, name=name)
    groups, unmatched = _group_keys(state)
    table = _module_table(model)
    linears = _linears(model)
    parts: dict[str, list[tuple[ModuleTarget, torch.Tensor, torch.Tensor]]] = {}
    for module, tensors in groups.items():
        target = _resolve(module, table)
        if target is None or "down" not in tensors or "up" not in tensors:
            unmatched += [f"{module}.{role}" for role in tensors]
            continue
        down, up = lora_pair(name, module, tensors)
        rank = down.shape[0]
        if "alpha" in tensors:
            up = up * (_alpha(name, module, tensors["alpha"]) / rank)
        elif alpha_scale is not None:
            up = up * alpha_scale
        parts.setdefault(target.module, []).append((target, down, up))
    if not parts:
        raise LoraError(f"{name}: none of its {len(state)} keys matches a layer of the DiT "
                        f"(examples: {', '.join(sorted(state)[:_SHOW])}); is it a HunyuanVideo LoRA?")
    layers = {m: _combine(m, linears[m], p, name) for m, p in parts.items()}
    if unmatched:
        log.warning("LoRA %s: %d of %d keys matched no DiT layer and are ignored (e.g. %s)", name,
                    len(unmatched), len(state), ", ".join(sorted(unmatched)[:_SHOW]))
    log.info("LoRA %s: %d layers of the DiT adapted", name, len(layers))
    return LoraWeights(name, layers, unmatched)


def _group_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Module name -> {"down", "up", "alpha"} tensors; and the keys that are none of these."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        split = _split_key(key)
        if split is None:
            unmatched.append(key)
            continue
        groups.setdefault(split[0], {})[split[1]] = tensor
    return groups, unmatched


def greedy_module_path(model: nn.Module, underscored: str) -> str | None:
    """The reference's resolution of an underscore-joined module path: take pieces one by one,
    joining the next piece with ``_`` while no child module has that name. None if it fails."""
    pieces = underscored.split("_")
    module, path, name = model, [], pieces.pop(0)
    while True:
        child = module._modules.get(name)
        if child is not None:
            module, path = child, [*path, name]
            if not pieces:
                return ".".join(path)
            name = pieces.pop(0)
        elif pieces:
            name = f"{name}_{pieces.pop(0)}" if name else pieces.pop(0)
        else:
            return None


def match_official_i2v_lora(model: nn.Module, state: dict[str, torch.Tensor], *,
                            name: str = "lora") -> LoraWeights:
    """An official HunyuanVideo-I2V LoRA (``Hunyuan_video_I2V_lora_*`` keys) against ``model``:
    modules by the reference's greedy underscore rule, ``alpha`` ignored (``delta W = up @ down``,
    times the LoRA's scale when merged). Keys naming the text encoder are refused: the
    reference would apply them there, which this DiT loader cannot do."""
    text = sorted(k for k in state if "text" in k)
    if text:
        raise LoraError(f"{name}: keys for the text encoder ({', '.join(text[:_SHOW])}) are not "
                        "supported; only the DiT's layers can be adapted")
    groups, unmatched = _group_keys({k: v for k, v in state.items() if k.startswith(I2V_LORA_PREFIX)})
    unmatched += [k for k in state if not k.startswith(I2V_LORA_PREFIX)]
    linears = _linears(model)
    layers = {}
    for module, tensors in groups.items():
        path = greedy_module_path(model, module[len(I2V_LORA_PREFIX):])
        if path not in linears or "down" not in tensors or "up" not in tensors:
            unmatched += [f"{module}.{role}" for role in tensors]
            continue
        down, up = lora_pair(name, module, tensors)
        layers[path] = _combine(path, linears[path], [(ModuleTarget(path), down, up)], name)
    if not layers:
        raise LoraError(f"{name}: none of its {len(state)} keys names a linear layer of the DiT "
                        f"(examples: {', '.join(sorted(state)[:_SHOW])})")
    if unmatched:
        log.warning("LoRA %s: %d of %d keys matched no DiT layer and are ignored (e.g. %s)", name,
                    len(unmatched), len(state), ", ".join(sorted(unmatched)[:_SHOW]))
    log.info("LoRA %s (official I2V format, alpha ignored): %d layers of the DiT adapted", name, len(layers))
    return LoraWeights(name, layers, unmatched)


def lora_pair(name: str, module: str, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A module's (down [r, in], up [out, r]) in float32, checked to be a finite linear pair."""
    down, up = tensors["down"].float(), tensors["up"].float()
    if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
        raise LoraError(f"{name}: {module} has down {tuple(down.shape)} / up {tuple(up.shape)}, "
                        "not a linear LoRA pair")
    if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
        raise LoraError(f"{name}: {module} holds NaN or infinite values; the file is damaged")
    return down, up


def _combine(module: str, linear: nn.Linear, parts, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One (down [R, in], up [out, R]) for a module, stacking the parts (q, k, v ...) by rows."""
    downs, ups = [], []
    for target, down, up in parts:
        if down.shape[1] != linear.in_features:
            raise LoraError(f"{name}: {module} takes {linear.in_features} inputs, the LoRA's down "
                            f"matrix has {down.shape[1]} (a LoRA for another model?)")
        rows = target.rows or slice(0, linear.out_features)
        if up.shape[0] != rows.stop - rows.start:
            raise LoraError(f"{name}: {module} rows {rows.start}:{rows.stop} need an up matrix of "
                            f"{rows.stop - rows.start} rows, the LoRA has {up.shape[0]}")
        if target.swap_halves:  # diffusers' (scale, shift) -> official (shift, scale)
            up = torch.cat(up.chunk(2, dim=0)[::-1], dim=0)
        full = up.new_zeros(linear.out_features, up.shape[1])
        full[rows] = up
        downs.append(down)
        ups.append(full)
    return torch.cat(downs, dim=0), torch.cat(ups, dim=1)


def load_lora(model: nn.Module, spec: LoraSpec | str | Path) -> LoraWeights:
    """Read a LoRA file and resolve it against ``model``."""
    spec = spec if isinstance(spec, LoraSpec) else LoraSpec(Path(spec))
    state, alpha_scale = read_lora_file(spec.path)
    return match_lora(model, state, name=spec.name, alpha_scale=alpha_scale)


# --- merging into the weights ---------------------------------------------------------------------

@dataclass
class FusedLora:
    """Handle of a merged LoRA; ``unfuse`` puts back the original tensors (when kept)."""

    model: nn.Module
    originals: dict[str, tuple[torch.Tensor, torch.Tensor | None]] | None

    def unfuse(self) -> None:
        if self.originals is None:
            raise RuntimeError("this LoRA was fused with restorable=False; reload the model instead")
        for name, (weight, scale) in self.originals.items():
            linear = _plain(self.model.get_submodule(name))
            linear.weight = nn.Parameter(weight, requires_grad=False)
            if scale is not None:
                linear.fp8_scale = scale
        self.originals = None


@torch.no_grad()
def fuse_lora(model: nn.Module, lora: LoraWeights, scale: float = 1.0, *,
              restorable: bool = True) -> FusedLora:
    """Merge ``scale * delta W`` into each adapted weight (new Parameters; the old ones are kept
    for :meth:`FusedLora.unfuse` when ``restorable``). FP8 layers get a new per-tensor scale."""
    originals: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for name in lora.layers:
        base = _plain(model.get_submodule(name))
        weight = base.weight
        delta = lora.delta(name).to(weight.device) * scale
        if isinstance(base, FP8Linear):
            originals[name] = (weight, base.fp8_scale)
            new, new_scale = quantize_weight(base.dequantized_weight(torch.float32) + delta)
            base.weight = nn.Parameter(new, requires_grad=False)
            base.fp8_scale = new_scale.to(weight.device)
        else:
            originals[name] = (weight, None)
            base.weight = nn.Parameter((weight.float() + delta).to(weight.dtype), requires_grad=False)
    return FusedLora(model, originals if restorable else None)


# --- side branch ----------------------------------------------------------------------------------

class LoRAAdapter(nn.Module):
    """One LoRA on one Linear: ``y += scale * (x @ down.T) @ up.T`` (non-persistent buffers)."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("down", down, persistent=False)  # [R, in]
        self.register_buffer("up", up, persistent=False)  # [out, R]
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.down.to(x.dtype).T) @ (self.up.to(x.dtype).T * self.scale)  # [..., out]


class LoRALinear(nn.Module):
    """A Linear (plain or FP8) plus LoRA side branches, by composition. ``base`` is untouched."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()

    @property
    def weight(self) -> torch.Tensor:  # callers read the dtype/device of a Linear's weight
        return self.base.weight

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        for adapter in self.adapters.values():
            if adapter.scale != 0:
                y = y + adapter(x)
        return y


def _adapter_key(name: str) -> str:
    return re.sub(r"\W", "_", name)


def attach_lora(model: nn.Module, lora: LoraWeights, scale: float = 1.0) -> None:
    """Add ``lora`` as a side branch: each adapted Linear becomes a :class:`LoRALinear`."""
    key = _adapter_key(lora.name)
    for name, (down, up) in lora.layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = getattr(parent, child)
        if not isinstance(module, LoRALinear):
            module = LoRALinear(module)
            setattr(parent, child, module)
        if key in module.adapters:
            raise LoraError(f"a LoRA named {lora.name!r} is already attached")
        device = module.base.weight.device
        module.adapters[key] = LoRAAdapter(down.to(device), up.to(device), scale)


def set_lora_scale(model: nn.Module, name: str, scale: float) -> int:
    """Change an attached LoRA's strength; returns how many layers it touches."""
    key, count = _adapter_key(name), 0
    for module in model.modules():
        if isinstance(module, LoRALinear) and key in module.adapters:
            module.adapters[key].scale = scale
            count += 1
    if not count:
        raise LoraError(f"no LoRA named {name!r} is attached")
    return count


def detach_loras(model: nn.Module, name: str | None = None) -> None:
    """Remove one attached LoRA (or all); a Linear left without adapters gets its plain self back."""
    for full_name, module in list(model.named_modules()):
        if not isinstance(module, LoRALinear):
            continue
        for key in list(module.adapters):
            if name is None or key == _adapter_key(name):
                del module.adapters[key]
        if not module.adapters:
            parent_name, _, child = full_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.base)


def apply_loras(model: nn.Module, specs: list[LoraSpec] | tuple[LoraSpec, ...], *,
                fuse: bool = True) -> list[LoraWeights]:
    """Apply each LoRA at its scale: merged for speed (not restorable, no memory overhead), or
    attached as switchable side branches."""
    loaded = []
    for spec in specs:
        lora = load_lora(model, spec)
        if fuse:
            fuse_lora(model, lora, spec.scale, restorable=False)
        else:
            attach_lora(model, lora, spec.scale)
        loaded.append(lora)
    return loaded


__all__ = [
    "FusedLora",
    "I2V_LORA_PREFIX",
    "LoRAAdapter",
    "LoRALinear",
    "LoraError",
    "LoraSpec",
    "LoraWeights",
    "apply_loras",
    "attach_lora",
    "detach_loras",
    "fuse_lora",
    "greedy_module_path",
    "load_lora",
    "match_lora",
    "match_official_i2v_lora",
    "read_lora_file",
    "set_lora_scale",
]
