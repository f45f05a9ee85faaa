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
kernel's S x S scores); the VAE's autocast region (the meta device has none) is CUDA autocast
emulated by :class:`CudaAutocast` (its norms' float32 outputs counted); Python reads of tensor
values (the text mask's lengths) answer "every text token is valid", the largest case.

Modes: ``none``, ``model``, ``blocks`` (K blocks on the device), each with and without
``--use-fp8`` (the official FP8 checkpoint, weight-only products), and sequence parallelism
(Ulysses 8): one rank's share (its 1/8 of the image tokens; in attention all tokens of 1/8 of the
heads, the all-to-all's buffers included).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
import warnings
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

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

    def bump(self, device: str, nbytes: int, op: str) -> None:
        """A peak of ``nbytes`` above what is live now, reached elsewhere (a replayed stage)."""
        if self.live[device] + nbytes > self.peak[device]:
            self.peak[device] = self.live[device] + nbytes
            self.peak_op[device] = op

    QUERIES = (torch.ops.prim.device.default, torch.ops.aten._has_compatible_shallow_copy_type.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.QUERIES:  # no tensor made: skip the bookkeeping (these are frequent)
            return out
        name = func.overloadpacket.__name__
        if isinstance(out, torch.Tensor):
            self._count(out, name)
        else:
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


# ---- CUDA autocast, emulated anywhere --------------------------------------------------------------

# CUDA autocast's op lists (torch.amp reference, "CUDA Op-Specific Behavior"), as the aten ops a
# dispatch mode sees: composite (linear, conv3d, layer_norm: in inference mode they arrive whole)
# and decomposed (addmm/mm, convolution, native_layer_norm, SDPA's kernels).
AUTOCAST_LOWER = frozenset({
    "addmm", "mm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "addr", "matmul", "linear", "convolution",
    "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "prelu", "chain_matmul", "multi_dot", "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu"})
AUTOCAST_FP32 = frozenset({
    "acos", "asin", "cosh", "sinh", "tan", "erfinv", "exp", "expm1", "log", "log10", "log1p", "log2",
    "pow", "reciprocal", "rsqrt", "sum", "prod", "cumsum", "cumprod", "norm", "linalg_vector_norm",
    "renorm", "dist", "cdist", "_cdist_forward", "pdist", "layer_norm", "native_layer_norm", "group_norm",
    "native_group_norm", "softmax", "_softmax", "log_softmax", "_log_softmax", "softplus", "normalize",
    "cosine_similarity"})
AUTOCAST_PROMOTE = frozenset({"addcdiv", "addcmul", "atan2", "cross", "dot", "grid_sampler", "index_put",
                              "scatter_add", "tensordot", "bilinear"})
_AUTOCASTABLE = (torch.float16, torch.bfloat16, torch.float32)


def autocast_rule(func, args, kwargs, lower: torch.dtype) -> torch.dtype | None:
    """The dtype CUDA autocast runs ``func`` in (None: it leaves the op alone). In-place ops
    and ops given an explicit ``dtype=`` are not eligible, as documented."""
    name = func.overloadpacket.__name__
    if func._schema.is_mutable or kwargs.get("dtype") is not None:
        return None
    if name in AUTOCAST_LOWER:
        return lower
    if name in AUTOCAST_FP32:
        return torch.float32
    if name in AUTOCAST_PROMOTE:
        dtypes = [t.dtype for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.dtype in _AUTOCASTABLE]
        return max(dtypes, key=lambda d: torch.finfo(d).bits) if dtypes else None
    return None


class CudaAutocast(TorchDispatchMode):
    """``torch.autocast("cuda", dtype)``'s casting on any device (``cast=False``: only check),
    recording ``(op, input dtypes, output dtypes, input ids, output ids)`` in ``trace``."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16, *, cast: bool = True, record: bool = True,
                 keep: bool = False):
        super().__init__()
        self.dtype, self.cast, self.record, self.trace = dtype, cast, record, []
        self.kept: list | None = [] if keep else None  # keep: ids stay unique (a dataflow check)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = autocast_rule(func, args, kwargs, self.dtype) if self.cast else None
        if target is not None:
            def to(t):
                return t.to(target) if isinstance(t, torch.Tensor) and t.dtype in _AUTOCASTABLE else t

            args, kwargs = tree_map(to, args), tree_map(to, kwargs)
        out = func(*args, **kwargs)
        if self.record:
            ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            self.trace.append((func, [t.dtype for t in ins], [t.dtype for t in outs],
                               [id(t) for t in ins], [id(t) for t in outs]))
            if self.kept is not None:
                self.kept.append((ins, outs))
        return out


# ---- a fake world: fake tensors, the meta device as the GPU, CUDA's attention kernels -----------

DEVICE = torch.device("meta")  # stands for the GPU
HOST = torch.device("cpu")
HALF = (torch.float16, torch.bfloat16)


def cuda_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA as CUDA runs it: flash for fp16/bf16 without a mask (output + LSE only); otherwise
    the memory-efficient kernel, a boolean mask first turned into an additive one in q's dtype
    (SDPA does so), a key/value head group expanded as SDPA's fallback does."""
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    if attn_mask is None and q.dtype in HALF:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
    bias = attn_mask
    if bias is not None and bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, dtype=q.dtype, device=q.device).masked_fill_(~bias, float("-inf"))
    if bias is not None:
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, False, dropout_p, is_causal,
                                                                  scale=scale)[0]


class CudaAttention(TorchFunctionMode):
    """Routes ``F.scaled_dot_product_attention`` to :func:`cuda_sdpa` (on the meta device SDPA
    would pick the math kernel, whose S x S scores no GPU run allocates)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            return cuda_sdpa(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


class Oracle(LiveBytes):
    """:class:`LiveBytes` that also answers Python's reads of fake tensor values: integers with
    ``int_answer`` (the text mask's sums: every text token valid), booleans True, floats 0.5."""

    int_answer = 256
    READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default,
             torch.ops.aten.is_nonzero.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default:  # fake tensors decompose it slowly (in Python)
            out = _fast_to_copy(args[0], **(kwargs or {}))
            self._count(out, "to")
            return out
        if func in self.READS:
            dtype = args[0].dtype
            if dtype == torch.bool or func is torch.ops.aten.is_nonzero.default:
                return True
            return 0.5 if dtype.is_floating_point else self.int_answer
        return super().__torch_dispatch__(func, types, args, kwargs)


def _fast_to_copy(x, *, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False,
                  memory_format=None):
    """``aten._to_copy`` as a fresh tensor of the result's size (the values never matter here)."""
    return torch.empty_like(x, dtype=dtype or x.dtype, device=device or x.device,
                            memory_format=memory_format or torch.preserve_format)


@contextlib.contextmanager
def fake_world() -> Iterator[FakeTensorMode]:
    """Fake tensors everywhere, module moves allowed, CUDA's attention, and noise drawn without a
    per-device generator (the meta device has none; the noise tensor is the same size)."""
    from hyvideo import compat
    from hyvideo.pipeline import t2v

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    mode.cache_enabled = False  # its keys cost more to hash than the ops here cost to run
    real_swap, real_noise = torch.utils.swap_tensors, t2v.draw_noise

    def swap(t1, t2):
        # Module.to() swaps fake parameters; the converter's weak references to them forbid
        # it, and nothing here converts real tensors again, so they can go.
        mode.fake_tensor_converter.meta_converter.tensor_memo.clear()
        return real_swap(t1, t2)

    def draw_noise(shape, seeds, device, dtype):
        return torch.randn((len(seeds), *shape), device=device, dtype=dtype).float()

    real_autocast = torch.is_autocast_enabled

    def is_autocast_enabled(*args):  # transformers asks it for the meta device, which has none
        try:
            return real_autocast(*args)
        except RuntimeError:
            return False

    real_region = compat.autocast

    def autocast_region(device, dtype, enabled=True):  # the meta device has no autocast: emulate CUDA's
        if torch.device(device).type == DEVICE.type and enabled and dtype != torch.float32:
            return CudaAutocast(dtype, record=False)
        return real_region(device, dtype, enabled)

    torch.utils.swap_tensors, t2v.draw_noise = swap, draw_noise
    torch.is_autocast_enabled, compat.autocast = is_autocast_enabled, autocast_region
    real_apply, torch.nn.Module._apply = torch.nn.Module._apply, _fake_apply
    try:
        with mode, CudaAttention(), fake_set_data():
            yield mode
    finally:
        torch.utils.swap_tensors, t2v.draw_noise = real_swap, real_noise
        torch.is_autocast_enabled, compat.autocast = real_autocast, real_region
        torch.nn.Module._apply = real_apply


def _fake_apply(self, fn, recurse=True):
    """``Module._apply`` (behind ``.to()``) for fake tensors: each tensor replaced by ``fn``'s
    result (a new storage of the same size on the target device, as on a GPU). Parameters become
    plain tensors: re-wrapping each in a Parameter costs a fake dispatch per tensor and changes
    no byte count."""
    if recurse:
        for child in self.children():
            child._apply(fn)
    with torch.no_grad():
        for table in (self._parameters, self._buffers):
            for key, t in table.items():
                if t is not None:
                    table[key] = fn(t)
    return self


@contextlib.contextmanager
def fake_set_data() -> Iterator[None]:
    """The offload engines point a parameter at another device's storage with ``p.data = t``;
    fake tensors of two devices cannot share a parameter that way, so the parameter is
    replaced by one holding ``t`` (the same bytes on the same device)."""
    from hyvideo.runtime.offload import block_swap, modes

    real = modes.set_tensor

    def set_tensor(module, name, is_param, tensor):
        try:
            real(module, name, is_param, tensor)
        except RuntimeError:
            module._parameters[name] = torch.nn.Parameter(tensor, requires_grad=False)

    modes.set_tensor = block_swap.set_tensor = set_tensor
    try:
        yield
    finally:
        modes.set_tensor = block_swap.set_tensor = real


# ---- the models, at full size, fake -------------------------------------------------------------

def _benchmark():
    """scripts/benchmark.py: the released shapes of the text encoders and the VAE."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchmark

    return benchmark


@dataclass
class Models:
    """Every component, fake and on the host: the text encoders (fp16), the VAE (fp16), the DiT
    in bf16 and as the official FP8 checkpoint (block linears float8, the rest bf16)."""

    text: object
    vae: torch.nn.Module
    dits: dict[bool, torch.nn.Module]
    variant: object
    executions: dict = field(default_factory=dict)  # (fp8, mode, K) -> Execution

    def roots(self, fp8: bool) -> dict[str, torch.nn.Module]:
        return {"text_encoder": self.text.llm.model, "text_encoder_2": self.text.clip.model,
                "dit": self.dits[fp8], "vae": self.vae}


def _on_host(module: torch.nn.Module) -> torch.nn.Module:
    """A meta-built module given fake host storage (its values never matter here)."""
    return module.to_empty(device=HOST).eval().requires_grad_(False)


def build_models(preset: str) -> Models:
    """``full``: the released sizes; ``tiny``: the tiny-random shapes (for the tests)."""
    from hyvideo.dit.fp8 import convert_to_fp8
    from hyvideo.dit.loader import build_dit
    from hyvideo.pipeline.variants import load_variant
    from hyvideo.runtime.offload.block_swap import transformer_blocks
    from hyvideo.text import CLIPTextEncoder, LLMTextEncoder, TextEncoders
    from hyvideo.vae import build_vae

    bench = _benchmark()
    setup = bench.make_setup(preset)
    fp16 = torch.float16
    llm = _on_host(bench._meta_llama(setup.llm, fp16))
    llm.rotary_emb = type(llm.rotary_emb)(config=llm.config, device=HOST)
    clip = _on_host(bench._meta_clip(setup.clip, fp16))
    from hyvideo.text.clip import text_tower

    emb = text_tower(clip).embeddings
    emb.position_ids = torch.arange(emb.position_embedding.num_embeddings, device=HOST)[None]
    llm_tok, clip_tok = bench.tokenizers()
    text = TextEncoders(LLMTextEncoder(llm, llm_tok), CLIPTextEncoder(clip, clip_tok))
    vae = _on_host(build_vae(setup.vae, device="meta", dtype=fp16))
    dits = {}
    for fp8 in (False, True):
        dit = build_dit(setup.dit, dtype=torch.bfloat16, device="meta")
        if fp8:
            convert_to_fp8(dit)
        dits[fp8] = _on_host(dit)
    variant = load_variant("HYVideo-T/2-cfgdistill" if preset == "full" else "tiny-random")
    # The same prompt and the same latent shapes in every case: encoded and decoded once.
    text.llm.encode = Replay(text.llm.encode, current_tracker)
    text.clip.encode = Replay(text.clip.encode, current_tracker)
    vae.decode = Replay(vae.decode, current_tracker)
    # Tiles of one shape decode alike: each shape's first tile runs, the others replay.
    vae.decoder.forward = Replay(vae.decoder.forward, current_tracker)
    for dit in dits.values():  # blocks of a kind compute alike: one of each runs per case
        for block in transformer_blocks(dit):
            block.forward = Replay(block.forward, current_tracker, BLOCK_RUNS, type(block).__name__)
    return Models(text, vae, dits, variant)


BLOCK_RUNS: dict = {}  # cleared at the start of each case


_CURRENT: list[LiveBytes] = []


def current_tracker() -> LiveBytes:
    return _CURRENT[-1]


# ---- stages that are the same in every case, run once --------------------------------------------

class Replay:
    """``fn`` (text encoding, VAE decoding) run for real the first time per input shape, and
    replayed after: its outputs allocated again (same shapes) and the device peak it reached
    above what was live when it started added again. Exact, because these stages compute the
    same ops on the same shapes in every case; only what is held around them differs."""

    def __init__(self, fn, tracker_of, seen: dict | None = None, name: str = ""):
        self.fn, self.tracker_of, self.name = fn, tracker_of, name
        self.seen = seen if seen is not None else {}

    def __call__(self, *args, **kwargs):
        key = self.name + repr([(tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a
                                for a in (*args, *sorted(kwargs.items()))])
        tracker, device = self.tracker_of(), DEVICE.type
        if key in self.seen:
            outputs, extra, op = self.seen[key]
            tracker.bump(device, extra, op)
            return _like(outputs)
        start = tracker.live[device]
        peak_before, op_before = tracker.peak[device], tracker.peak_op.get(device)
        tracker.peak[device] = start  # measure this call's own peak
        out = self.fn(*args, **kwargs)
        extra, op = tracker.peak[device] - start, tracker.peak_op.get(device, "")
        if peak_before > tracker.peak[device]:
            tracker.peak[device], tracker.peak_op[device] = peak_before, op_before
        self.seen[key] = (_shapes(out), extra, op)
        return out


def _shapes(out):
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape), out.dtype, out.device)
    if isinstance(out, tuple | list):
        return type(out)(_shapes(o) for o in out)
    return out


def _like(spec):
    if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[1], torch.dtype):
        return torch.empty(spec[0], dtype=spec[1], device=spec[2])
    if isinstance(spec, tuple | list):
        return type(spec)(_like(o) for o in spec)
    return spec


# ---- one rank's share under Ulysses -------------------------------------------------------------

class RankShare:
    """What the DiT's ``token_split`` does on rank 0 of a Ulysses group of ``degree`` ranks: keep
    its 1/degree of the image tokens, attend with the real cross-rank attention (whose
    collectives :func:`stand_in_collectives` replaces by buffers of their sizes), gather."""

    def __init__(self, degree: int):
        from hyvideo.runtime.parallel.attention import SequenceParallelAttention

        attention = SequenceParallelAttention.__new__(SequenceParallelAttention)
        attention.ulysses = attention.ring = None
        attention.u_size, attention.r_size, attention.u_rank = degree, 1, 0
        self.attention, self.group, self.parts = attention, None, degree

    def first_row(self, num_tokens: int) -> int:
        return 0  # rank 0's chunk starts the sequence

    def scatter(self, img, rope):
        rows = slice(0, img.shape[1] // self.parts)
        return img[:, rows], (rope[0][rows], rope[1][rows])

    def gather(self, tokens):
        return torch.cat([torch.empty_like(tokens) for _ in range(self.parts)], dim=1)


class _AllToAll:
    """yunchang's ``SeqAllToAll4D`` by sizes: the contiguous input, the send and receive buffers
    of ``all_to_all_single``, then the re-laid-out result."""

    @staticmethod
    def apply(group, t, scatter_idx, gather_idx, use_sync=False):
        degree = _AllToAll.degree
        shape = list(t.shape)
        shape[scatter_idx] //= degree
        shape[gather_idx] *= degree
        t = t.contiguous()
        send, recv = torch.empty_like(t), torch.empty_like(t)
        out = torch.empty(shape, dtype=t.dtype, device=t.device)
        del send, recv
        return out


@contextlib.contextmanager
def stand_in_collectives(degree: int) -> Iterator[None]:
    """yunchang's all-to-all and the all-gathers by the buffers they allocate."""
    import torch.distributed as dist
    import yunchang.comm.all_to_all as a2a

    from hyvideo import compat

    real = a2a.SeqAllToAll4D, dist.all_gather, compat.all_gather
    _AllToAll.degree = degree
    a2a.SeqAllToAll4D = _AllToAll
    dist.all_gather = lambda parts, tensor, group=None, **kw: None
    compat.all_gather = lambda tensor, group=None: [torch.empty_like(tensor) for _ in range(degree)]
    try:
        yield
    finally:
        a2a.SeqAllToAll4D, dist.all_gather, compat.all_gather = real


class ShareExecution:
    """An execution whose DiT calls carry :class:`RankShare` (everything else as ``inner``)."""

    def __init__(self, inner, degree: int):
        self.inner, self.share = inner, RankShare(degree)
        self.is_main = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, dit, *args, **kwargs):
        return self.inner.predict(dit, *args, token_split=self.share, **kwargs)


# ---- one generation per case --------------------------------------------------------------------

STAGES = ("text", "denoise", "decode", "total")
PROMPT = "A cat walks on the grass, realistic style."


@dataclass(frozen=True)
class Case:
    height: int
    width: int
    frames: int
    mode: str  # none | model | blocks
    fp8: bool
    blocks_on_device: int | None  # K for blocks, else None
    ulysses: int  # 1, or the Ulysses degree whose rank-0 share is measured


@dataclass(frozen=True)
class Record:
    """One line of ``--json``: a case's peak device bytes in one stage, and the op at the peak."""

    height: int
    width: int
    frames: int
    mode: str
    fp8: bool
    blocks_on_device: int | None
    ulysses: int
    stage: str
    peak_bytes: int
    peak_op: str


class StageMeter:
    """The pipeline's progress callback: closes the text stage when encoding ends and the
    denoising stage when decoding starts, keeping each stage's device peak."""

    def __init__(self, tracker: LiveBytes):
        self.tracker, self.stage, self.peaks = tracker, "text", {}

    def __call__(self, event) -> None:
        if self.stage == "text" and event.stage == "text" and event.step == event.steps:
            self.close("denoise")
        elif self.stage == "denoise" and event.stage == "decode":
            self.close("decode")

    def close(self, following: str | None) -> None:
        device = DEVICE.type
        self.peaks[self.stage] = (self.tracker.peak[device], self.tracker.peak_op.get(device, ""))
        self.tracker.start_stage()
        self.stage = following


def _tensors(modules) -> list[torch.Tensor]:
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


def run_case(models: Models, case: Case) -> list[Record]:
    """One generation (text, one denoising step, tiled decode) in ``case``'s mode: its peaks."""
    from hyvideo.pipeline.t2v import HunyuanVideoPipeline
    from hyvideo.pipeline.types import Components
    from hyvideo.runtime.build import make_execution
    from hyvideo.runtime.offload.config import OffloadConfig

    roots = models.roots(case.fp8)
    dit = roots["dit"]
    for module in roots.values():  # where load_pipeline loads them
        target = DEVICE if case.mode == "none" else HOST
        if any(t.device != target for t in _tensors([module])):
            module.to(target)
    key = (case.fp8, case.mode, case.blocks_on_device)
    if key not in models.executions:  # built once per mode: block swap packs the blocks once
        offload = OffloadConfig(case.mode, case.blocks_on_device or 2, pin_memory=False)
        models.executions[key] = make_execution(Components(dit, models.vae, models.text), DEVICE, offload)
    execution = models.executions[key]
    if case.ulysses > 1:
        execution = ShareExecution(execution, case.ulysses)
    v = models.variant
    pipe = HunyuanVideoPipeline(dit, models.vae, models.text, device=DEVICE, name=v.name,
                                defaults=v.sampling, geometry=v.geometry, vae_tiling=True,
                                execution=execution)
    request = pipe.request(PROMPT, height=case.height, width=case.width, video_length=case.frames,
                           infer_steps=1)
    collectives = stand_in_collectives(case.ulysses) if case.ulysses > 1 else contextlib.nullcontext()
    BLOCK_RUNS.clear()
    with Oracle() as tracker, module_names(tracker, roots), collectives:
        _CURRENT.append(tracker)
        tracker.track(*_tensors(roots.values()))
        tracker.start_stage()
        meter = StageMeter(tracker)
        pipe(request, callback=meter, show_progress=False)
        meter.close(None)
    execution.close()
    stage, (peak, op) = max(meter.peaks.items(), key=lambda item: item[1][0])
    meter.peaks["total"] = (peak, f"{stage}: {op}")
    return [Record(**asdict(case), stage=s, peak_bytes=meter.peaks[s][0], peak_op=meter.peaks[s][1])
            for s in STAGES]


# ---- the table ----------------------------------------------------------------------------------

def cases(sizes: list[tuple[int, int]], frames: int, ks: list[int], ulysses: list[int],
          modes: tuple[str, ...] = ("none", "model", "blocks"), fp8s: tuple[bool, ...] = (False, True)) -> list[Case]:
    out = []  # mode first: the models move to the device and back once, not once per case
    for mode, fp8, (h, w), u in itertools.product(modes, fp8s, sizes, ulysses):
        out += [Case(h, w, frames, mode, fp8, k, u) for k in ks] if mode == "blocks" else \
               [Case(h, w, frames, mode, fp8, None, u)]
    return out


def table(records: list[Record]) -> str:
    """One row per case: the peak of each stage in GiB, and where the total peak happens."""
    rows = {}
    for r in records:
        key = (r.height, r.width, r.frames, r.mode, r.fp8, r.blocks_on_device, r.ulysses)
        rows.setdefault(key, {})[r.stage] = r
    header = (f"{'size':>14} {'mode':>11} {'fp8':>4} {'ulys':>4} | {'text':>6} {'denoise':>7} "
              f"{'decode':>6} {'total':>6} GiB | total peak at")
    lines = [header]
    for (h, w, f, mode, fp8, k, u), stages in rows.items():
        name = f"blocks K={k}" if mode == "blocks" else mode
        gib = [f"{stages[s].peak_bytes / GiB:{width}.2f}" for s, width in zip(STAGES, (6, 7, 6, 6))]
        lines.append(f"{f'{h}x{w}x{f}':>14} {name:>11} {'yes' if fp8 else 'no':>4} {u:>4} | "
                     f"{' '.join(gib)}     | {stages['total'].peak_op}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write the records (a JSON list) to this file")
    p.add_argument("--sizes", default="544x960,720x1280", help="HxW list, comma separated")
    p.add_argument("--frames", type=int, default=129)
    p.add_argument("--blocks-on-device", default="2", help="K values for --offload blocks, comma separated")
    p.add_argument("--ulysses", default="1,8", help="Ulysses degrees (1: no parallelism), comma separated")
    p.add_argument("--modes", default="none,model,blocks", help="offload modes, comma separated")
    p.add_argument("--fp8", default="no,yes", help="without and/or with --use-fp8 (no,yes)")
    p.add_argument("--preset", choices=("full", "tiny"), default="full",
                   help="full: the released model sizes; tiny: the tiny-random shapes (tests)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes.split(",")]
    ks = [int(k) for k in args.blocks_on_device.split(",")]
    ulysses = [int(u) for u in args.ulysses.split(",")]
    start = time.perf_counter()
    records: list[Record] = []
    warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
    with fake_world():
        models = build_models(args.preset)
        print(f"models built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        modes = tuple(args.modes.split(","))
        fp8s = tuple({"no": False, "yes": True}[f] for f in args.fp8.split(","))
        for case in cases(sizes, args.frames, ks, ulysses, modes, fp8s):
            t0, c0 = time.perf_counter(), time.process_time()
            records += run_case(models, case)
            print(f"{case}: {time.perf_counter() - t0:.1f} s ({time.process_time() - c0:.1f} s CPU)",
                  file=sys.stderr)
    print(table(records))
    print(f"({len(records) // len(STAGES)} cases in {time.perf_counter() - start:.0f} s; peaks of live "
          "tensor bytes on the GPU, computed with fake tensors: add ~0.5-1 GiB for the CUDA context, "
          "allocator rounding and library workspaces)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
