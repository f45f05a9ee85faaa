"""FP8 for the official ``*_fp8.pt`` checkpoints: weight-only, or true float8 matrix products.

The official FP8 file stores the ``.weight`` of every ``nn.Linear`` inside ``double_blocks`` and
``single_blocks`` as ``float8_e4m3fn``; the companion ``*_fp8_map.pt`` maps each such module name
to a per-tensor float32 scale. Here that is a Linear subclass swapped in by :func:`convert_to_fp8`;
nothing rebinds ``forward`` from outside. It computes in one of two ways:

* weight-only (default, the reference's ``--use-fp8``): ``F.linear(x, weight.to(dtype) *
  scale.to(dtype))`` -- under bf16 the scale is rounded to bf16 first, as in the reference;
* float8 matmul (:func:`enable_fp8_matmul`, ``--fp8-matmul``): the activations are quantized on
  the fly to float8_e4m3fn with a dynamic scale (per token by default, or per tensor) and
  ``torch._scaled_mm`` multiplies them with the official float8 weight and its official float32
  scale (the weight is never requantized), accumulating in float32. Layers whose shape or device
  cannot take it keep the weight-only path; that is decided once, when the mode is enabled, by
  probing the product, per-token scaling and the fused bias separately: a device that refuses
  per-token (row-wise) scales -- torch < 2.7 scales row-wise only on sm_90 -- gets per-tensor
  scales, and one that refuses the fused bias gets the bias added after the product.
  :func:`fp8_matmul_report` says what was chosen and why (the pipeline puts it in the output
  metadata).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hyvideo import compat
from hyvideo.checkpoints.reading import CheckpointError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
QUANTIZED_PARENTS = ("double_blocks", "single_blocks")
ACTIVATION_SCALES = ("token", "tensor")  # one dynamic scale per row of x, or one for all of x
MATMUL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # out dtypes of _scaled_mm
FUSED_BIAS_DTYPES = (torch.bfloat16, torch.float16)  # _scaled_mm adds a bias only for these
MATMUL_ALIGNMENT = 16  # K and N of torch._scaled_mm must be multiples of this (cuBLASLt)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float weight -> (float8 weight, float32 scale), scale = max|W| / 448 as the official tool."""
    scale = (weight.abs().max().float() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (weight.float() / scale).to(FP8_DTYPE), scale


QUANT_CHUNK_BYTES = 64 << 20  # float32 quotient per chunk of rows (bounds the transients)


def quantize_activations(x: torch.Tensor, per_token: bool = True, *,
                         chunk_bytes: int = QUANT_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] -> (float8_e4m3fn [M, K], float32 scale [M, 1] or [1, 1]) with ``x ~= q * scale``.

    The scale is amax / 448 (per row, or over the whole tensor), so the largest magnitude lands
    on the top of the e4m3 range; an all-zero row (or tensor) gets scale 1 instead of 0.

    Written as one pass it would hold |x| and the float32 quotient x / scale at full size: at
    720p a single block's ``linear2`` input is [119k, 15360], a 7.3 GB quotient per call. So the
    amax is a reduction (no |x| copy) and the quotient is formed ``chunk_bytes`` of rows at a
    time, straight into the float8 result: the same arithmetic element by element.
    """
    m, k = x.shape
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True)  # [M, 1] max |x| per row
    if not per_token:
        amax = amax.amax(dim=0, keepdim=True)  # [1, 1]
    amax = amax.float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = torch.empty(m, k, dtype=FP8_DTYPE, device=x.device)
    rows = max(1, chunk_bytes // (4 * max(k, 1)))
    for start in range(0, m, rows):
        part = slice(start, start + rows)
        # x / scale is float32 (a 2-D float32 scale promotes a bf16 x): no second rounding
        # before e4m3. The clamp guards the top of the range against the rounding of amax / 448.
        quotient = torch.div(x[part], scale[part] if per_token else scale)
        q[part] = quotient.clamp_(-FP8_MAX, FP8_MAX)  # the copy casts to e4m3, as .to() does
        del quotient
    return q, scale


class FP8Linear(nn.Linear):
    """A Linear whose weight is float8 with one float32 scale (non-persistent ``fp8_scale``).

    ``matmul`` selects the float8 matrix product (set by :func:`enable_fp8_matmul`, which also
    sets ``activation_scale``); ``matmul_fallback`` says why a layer asked for it kept the
    weight-only path.
    """

    matmul: bool = False
    activation_scale: str = "token"
    matmul_fallback: str | None = None
    fuse_bias: bool = True  # False where the device refused torch._scaled_mm's fused bias
    matmul_notes: tuple[str, ...] = ()  # what was changed from the request, and why

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8Linear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        device = linear.weight.device
        new.weight = nn.Parameter(
            torch.empty(linear.out_features, linear.in_features, dtype=FP8_DTYPE, device=device),
            requires_grad=False,
        )
        new.bias = linear.bias
        new.register_buffer("fp8_scale", torch.ones((), device=device), persistent=False)
        return new

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.fp8_scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matmul and x.numel() > 0:
            return self.scaled_mm_forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def scaled_mm_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., K] -> [..., N] with float8 activations and weight, float32 accumulation."""
        if x.dtype not in MATMUL_DTYPES:
            raise RuntimeError(f"fp8 matmul computes in bf16, fp16 or fp32, not {x.dtype}: "
                               "run the DiT in one of those or turn the fp8 matmul off")
        per_token = self.activation_scale == "token"
        x_q, x_scale = quantize_activations(x.reshape(-1, self.in_features), per_token)  # [M, K]
        w_scale = self.fp8_scale.float()
        if per_token:  # row-wise scaling wants the weight's scale per output column: [1, N]
            w_scale = w_scale.reshape(1, 1).expand(1, self.out_features).contiguous()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        fuse_bias = bias is not None and self.fuse_bias and x.dtype in FUSED_BIAS_DTYPES
        # mat2 must be column-major [K, N]: the transpose of the contiguous [N, K] weight.
        y = torch._scaled_mm(x_q, self.weight.t(), scale_a=x_scale, scale_b=w_scale,
                             bias=bias if fuse_bias else None, out_dtype=x.dtype)  # [M, N]
        if bias is not None and not fuse_bias:
            y = y + bias
        return y.reshape(*x.shape[:-1], self.out_features)


def fp8_layer_names(model: nn.Module) -> list[str]:
    """Names of the Linear modules the official FP8 checkpoint quantizes."""
    return [
        name for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(p in name.split(".") for p in QUANTIZED_PARENTS)
    ]


def convert_to_fp8(model: nn.Module) -> list[str]:
    """Swap the quantized Linears of ``model`` for :class:`FP8Linear` in place; return their names."""
    names = fp8_layer_names(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, FP8Linear.from_linear(getattr(parent, child)))
    return names


def set_fp8_scales(model: nn.Module, scales: Mapping[str, torch.Tensor], source: str = "fp8 map") -> None:
    """Set every FP8Linear's scale from the official map (module name -> [] or [1] tensor)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, FP8Linear)}
    missing = sorted(set(layers) - set(scales))
    unexpected = sorted(set(scales) - set(layers))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the FP8 layers: {len(missing)} missing "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    for name, layer in layers.items():
        scale = scales[name]
        if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
            shape = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
            raise CheckpointError(f"{source}: scale of {name} is {shape}, expected a tensor of shape [] or [1]")
        if not (scale.is_floating_point() and torch.isfinite(scale).all() and scale.item() > 0):
            raise CheckpointError(f"{source}: scale of {name} is {scale.item()}, expected a finite number > 0")
        layer.fp8_scale = scale.reshape(()).to(device=layer.weight.device, dtype=torch.float32)


# --- float8 matrix products -----------------------------------------------------------------------

@functools.cache
def _scaled_mm_problem(device: torch.device, per_token: bool, dtype: torch.dtype,
                       with_bias: bool = False) -> str | None:
    """Why ``torch._scaled_mm`` cannot serve (device, scaling, out dtype; with a fused bias when
    ``with_bias``); None when it can. Runs one tiny product and checks its value."""
    if not hasattr(torch, "_scaled_mm"):
        return f"torch {torch.__version__} has no torch._scaled_mm"
    m, k, n = MATMUL_ALIGNMENT, 2 * MATMUL_ALIGNMENT, MATMUL_ALIGNMENT
    what = "torch._scaled_mm" + (" with a fused bias" if with_bias else "")
    scales = "per-token" if per_token else "per-tensor"
    try:
        a = torch.ones(m, k, device=device).to(FP8_DTYPE)
        b = torch.ones(n, k, device=device).to(FP8_DTYPE)
        ones = functools.partial(torch.ones, device=device, dtype=torch.float32)
        scale_a, scale_b = (ones(m, 1), ones(1, n)) if per_token else (ones(1, 1), ones(()))
        bias = torch.ones(n, device=device, dtype=dtype) if with_bias else None
        out = torch._scaled_mm(a, b.t(), scale_a=scale_a, scale_b=scale_b, bias=bias, out_dtype=dtype)
        if out.shape != (m, n) or not bool((out.float() == k + with_bias).all()):
            return f"{what} gives wrong results on {device}"
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ""
        if per_token and not with_bias and compat.torch_version() < (2, 7):
            hint = f"; torch {torch.__version__} scales row-wise only on sm_90 GPUs (2.7 adds others)"
        return f"{what} does not run on {device} with {scales} scales ({first_line[:160]}){hint}"
    return None


def clear_probes() -> None:
    """Forget what the devices answered (for tests that change torch's behaviour)."""
    _scaled_mm_problem.cache_clear()
    matmul_plan.cache_clear()


def fp8_matmul_supported(device: torch.device | str, activation_scale: str = "token",
                         dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether float8 matmul runs on ``device`` with these scales (one tiny product, tried once)."""
    _check_activation_scale(activation_scale)
    return _scaled_mm_problem(torch.device(device), activation_scale == "token", dtype) is None


@dataclass(frozen=True)
class MatmulPlan:
    """What a device gives for a requested activation scale: the scale used (None: no float8
    product at all, ``problem`` says why), whether the bias is fused, and notes on changes."""

    activation_scale: str | None
    fuse_bias: bool
    problem: str | None = None
    notes: tuple[str, ...] = ()


@functools.cache
def matmul_plan(device: torch.device, activation_scale: str, dtype: torch.dtype) -> MatmulPlan:
    """Probe the product, the scaling and the fused bias separately: a refused per-token scale
    falls back to per-tensor scales and a refused bias fusion to adding the bias after; only a
    refused product itself leaves the layers weight-only."""
    scale, notes = activation_scale, []
    problem = _scaled_mm_problem(device, scale == "token", dtype)
    if problem is not None and scale == "token" and _scaled_mm_problem(device, False, dtype) is None:
        notes.append(f"per-tensor activation scales instead of per-token: {problem}")
        scale, problem = "tensor", None
    if problem is not None:
        return MatmulPlan(None, False, problem)
    fuse = dtype in FUSED_BIAS_DTYPES
    if fuse:
        bias_problem = _scaled_mm_problem(device, scale == "token", dtype, with_bias=True)
        if bias_problem is not None:
            fuse = False
            notes.append(f"bias added after the product: {bias_problem}")
    return MatmulPlan(scale, fuse, None, tuple(notes))


def _check_activation_scale(activation_scale: str) -> None:
    if activation_scale not in ACTIVATION_SCALES:
        raise ValueError(f"activation_scale must be one of {', '.join(ACTIVATION_SCALES)}, "
                         f"not {activation_scale!r}")


def _shape_problem(layer: FP8Linear) -> str | None:
    if layer.weight.dtype != FP8_DTYPE:
        return f"weight is {layer.weight.dtype}, not {FP8_DTYPE}"
    k, n = layer.in_features, layer.out_features
    if k % MATMUL_ALIGNMENT or n % MATMUL_ALIGNMENT:
        return f"K={k}, N={n}: both must be multiples of {MATMUL_ALIGNMENT}"
    if not layer.weight.is_contiguous():
        return "weight is not contiguous (the product needs W^T column-major)"
    return None


def _fp8_layers(model: nn.Module) -> dict[str, FP8Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, FP8Linear)}


def _compute_dtype(layers: Iterable[FP8Linear]) -> torch.dtype:
    """The model's precision, as its FP8 layers' biases hold it (bf16 when none has a bias)."""
    return next((m.bias.dtype for m in layers if m.bias is not None), torch.bfloat16)


def enable_fp8_matmul(model: nn.Module, activation_scale: str = "token", *,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> list[str]:
    """Switch ``model``'s FP8 layers to float8 matrix products; return the names of those that use it.

    ``activation_scale``: "token" (one dynamic scale per row of the input, the default) or
    "tensor" (one for the whole input). ``device`` is where the layers will run (default: where
    their weights are; give it when the model is offloaded to the CPU between uses) and ``dtype``
    the precision they compute in (default: their biases' dtype). The device is probed once
    (:func:`matmul_plan`); a layer whose shape it cannot take, or every layer on a device without
    float8 matmul, keeps the weight-only path, with the reason in ``layer.matmul_fallback`` (see
    :func:`fp8_matmul_report`).
    """
    _check_activation_scale(activation_scale)
    layers = _fp8_layers(model)
    if not layers:
        raise ValueError("fp8 matmul needs FP8 weights: load the official FP8 checkpoint "
                         "(*_fp8.pt with its *_fp8_map.pt, --use-fp8)")
    dtype = dtype or _compute_dtype(layers.values())
    used = []
    for name, layer in layers.items():
        where = torch.device(device) if device is not None else layer.weight.device
        if where.type == "meta":
            raise ValueError("enable fp8 matmul after the weights are loaded (they are on the meta "
                             "device), or pass the device the model will run on")
        plan = matmul_plan(where, activation_scale, dtype)
        problem = _shape_problem(layer) or plan.problem
        layer.matmul, layer.matmul_fallback = problem is None, problem
        layer.activation_scale = plan.activation_scale or activation_scale
        layer.fuse_bias, layer.matmul_notes = plan.fuse_bias, plan.notes
        if problem is None:
            used.append(name)
    return used


def disable_fp8_matmul(model: nn.Module) -> None:
    """Back to the weight-only path in every FP8 layer."""
    for layer in _fp8_layers(model).values():
        layer.matmul, layer.matmul_fallback, layer.matmul_notes = False, None, ()


@dataclass(frozen=True)
class _MatmulState:
    """What :func:`fp8_matmul_report` and :func:`fp8_matmul_summary` read off the FP8 layers."""

    layers: int
    enabled: bool  # some layer uses float8 matmul, or was asked to and fell back
    used: list[FP8Linear]
    weight_only: dict[str, list[str]]  # reason -> names of the layers on the weight-only path
    scales: list[str]  # activation scales in use, sorted
    notes: list[str]  # changes from the request, sorted


def _matmul_state(model: nn.Module) -> _MatmulState:
    layers = _fp8_layers(model)
    used = [m for m in layers.values() if m.matmul]
    weight_only: dict[str, list[str]] = {}
    for name, m in layers.items():
        if not m.matmul:
            weight_only.setdefault(m.matmul_fallback or "not enabled", []).append(name)
    return _MatmulState(len(layers), any(m.matmul or m.matmul_fallback for m in layers.values()), used,
                        weight_only, sorted({m.activation_scale for m in used}),
                        sorted({note for m in used for note in m.matmul_notes}))


def fp8_matmul_report(model: nn.Module) -> dict | None:
    """What float8 matmul does in ``model`` (None when it was never enabled): layer counts, the
    activation scales and bias handling in use, and why any layer or option fell back. The
    pipeline adds it to every result's metadata, so a fallback is visible in the output."""
    state = _matmul_state(model)
    if not state.enabled:
        return None
    return {
        "layers": state.layers,
        "float8_layers": len(state.used),
        "activation_scales": state.scales,
        "bias": sorted({"fused" if m.fuse_bias else "added after" for m in state.used if m.bias is not None}),
        "weight_only": {reason: len(names) for reason, names in state.weight_only.items()},
        "notes": state.notes,
    }


def fp8_matmul_summary(model: nn.Module) -> str:
    """One line: how many FP8 layers use float8 matmul, and why the others do not."""
    state = _matmul_state(model)
    text = f"fp8 matmul in {len(state.used)} of {state.layers} FP8 layers"
    if state.used:
        text += f" (per-{'/'.join(state.scales)} activation scales)"
    for reason, names in state.weight_only.items():
        text += f"; weight-only in {len(names)} ({reason}; e.g. {names[0]})"
    for note in state.notes:
        text += f"; {note}"
    return text
