"""Offload modes: every mode computes exactly what ``none`` computes; block swap bookkeeping."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hyvideo import compat
from hyvideo.apps.cli import offload_config
from hyvideo.runtime.offload import MODES, OffloadConfig, offload_components
from hyvideo.runtime.offload.modes import SequentialOffload
from hyvideo.runtime.offload.block_swap import BlockSwap, BlockSwapOffload, SyncCopies, transformer_blocks
from hyvideo.pipeline.execution import Execution
from hyvideo.runtime.build import OffloadExecution
from tests.dit_utils import random_dit, random_inputs, tiny_config

CPU = torch.device("cpu")
CONFIG = tiny_config(mm_double_blocks_depth=3, mm_single_blocks_depth=4)  # 7 blocks: K does not divide
N_BLOCKS = 7


@pytest.fixture(scope="module")
def dit_and_reference():
    dit = random_dit(CONFIG).eval()
    inputs = random_inputs(CONFIG)
    with torch.inference_mode():
        reference = [dit(*_step_inputs(inputs, step)) for step in range(2)]
    return dit, inputs, reference


def _step_inputs(inputs, step: int):
    x, t, *rest = inputs
    return (x * (1 + step), t * (1 - 0.3 * step), *rest)  # two different "denoising steps"


def _two_steps(dit, inputs):
    with torch.inference_mode():
        return [dit(*_step_inputs(inputs, step)) for step in range(2)]


class HomeReads(TorchDispatchMode):
    """Records every computing op that reads memory in ``storages`` (the CPU copies of offloaded
    weights); copying out of them, and views of them, are allowed."""

    ALLOWED: ClassVar = {torch.ops.aten.copy_.default, torch.ops.aten.clone.default,
               torch.ops.aten._to_copy.default,
               torch.ops.aten._has_compatible_shallow_copy_type.default}  # ``p.data = ...``

    def __init__(self, storages: set[int]):
        super().__init__()
        self.storages, self.reads = storages, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in self.ALLOWED and not func.is_view:
            for t in tree_leaves((args, kwargs or {})):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in self.storages:
                    self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


def _storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


# ---- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "disk"}, "unknown offload mode 'disk'"),
    ({"mode": "blocks", "blocks_on_device": 0}, "blocks on device must be an integer >= 1"),
    ({"mode": "blocks", "blocks_on_device": 2.5}, "blocks on device must be an integer >= 1"),
    ({"mode": "blocks", "blocks_on_device": True}, "blocks on device must be an integer >= 1"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OffloadConfig(**kwargs)


def test_use_cpu_offload_is_model_and_conflicts_are_errors():
    assert offload_config(None).mode == "none"
    assert offload_config(None, use_cpu_offload=True).mode == "model"
    assert offload_config("model", use_cpu_offload=True).mode == "model"
    assert offload_config("blocks", blocks_on_device=3) == OffloadConfig("blocks", 3)
    with pytest.raises(ValueError, match="conflicts with --offload blocks"):
        offload_config("blocks", use_cpu_offload=True)
    assert "--use-cpu-offload" in offload_config(None, use_cpu_offload=True).describe()
    assert OffloadConfig("blocks").load_device("meta") == CPU
    assert OffloadConfig("none").load_device("meta") == torch.device("meta")
    descriptions = {OffloadConfig(m).describe() for m in MODES}
    assert len(descriptions) == len(MODES) and all("\n" not in d for d in descriptions)


def test_blocks_needs_a_dit():
    with pytest.raises(ValueError, match="needs a DiT"):
        offload_components({"vae": torch.nn.Linear(2, 2)}, CPU, OffloadConfig("blocks"))


# ---- every mode == none -------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    OffloadConfig("none"), OffloadConfig("model"), OffloadConfig("sequential"),
    *(OffloadConfig("blocks", k) for k in (1, 2, 3, N_BLOCKS + 2)),
], ids=lambda c: f"{c.mode}-{c.blocks_on_device}")
def test_mode_is_bit_identical_to_none_over_two_steps(dit_and_reference, config):
    dit, inputs, reference = dit_and_reference
    offload = offload_components({"dit": dit}, CPU, config)
    with offload.use("dit"):
        outputs = _two_steps(dit, inputs)
    offload.close()
    assert all(torch.equal(a, b) for a, b in zip(outputs, reference))
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in dit.modules())
    assert torch.equal(_two_steps(dit, inputs)[1], reference[1])  # still fine without offload


@pytest.mark.parametrize("mode", ["sequential", "blocks"])
def test_no_op_reads_offloaded_weights_in_place(dit_and_reference, mode):
    """Every computing op reads the device copy, never the CPU home of an offloaded weight."""
    dit, inputs, reference = dit_and_reference
    offload = offload_components({"dit": dit}, CPU, OffloadConfig(mode, 2))
    if mode == "blocks":
        homes = {l.home.untyped_storage().data_ptr() for l in offload.swaps["dit"].layouts}
    else:
        homes = _storages([*dit.parameters(), *dit.buffers()])
    guard = HomeReads(homes)
    with offload.use("dit"), guard, torch.inference_mode():
        output = dit(*inputs)
    assert guard.reads == []
    assert torch.equal(output, reference[0])
    # The guard itself works: without offload the same weights are read where they are.
    plain = HomeReads(homes)
    with plain, torch.inference_mode():
        dit(*inputs)
    assert plain.reads


# ---- block swap bookkeeping ---------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3])
def test_block_swap_residency_bound_and_prefetch_order(dit_and_reference, k):
    dit, inputs, _ = dit_and_reference
    offload = offload_components({"dit": dit}, CPU, OffloadConfig("blocks", k))
    swap = offload.swaps["dit"]
    swap.trace = []
    with offload.use("dit"):
        _two_steps(dit, inputs)
    runs = [e for e in swap.trace if e[0] == "run"]
    loads = [e[1] for e in swap.trace if e[0] == "load"]
    assert [e[1] for e in runs] == list(range(N_BLOCKS)) * 2
    for _, i, resident in runs:
        window = {(i + d) % N_BLOCKS for d in range(k)}
        assert set(resident) == window  # the running block and the next K-1, never more
    # Each block is copied once per step, in order, the first ones of step 2 ahead of time
    # (wrap-around): no block is ever loaded twice in a row, none skipped.
    assert loads == [j % N_BLOCKS for j in range(N_BLOCKS + k - 1 + N_BLOCKS)][:len(loads)]
    assert len(loads) == 2 * N_BLOCKS + k - 1
    assert swap.resident() == []  # all slots released on exit


def test_block_swap_with_room_for_every_block_loads_each_once(dit_and_reference):
    dit, inputs, _ = dit_and_reference
    offload = offload_components({"dit": dit}, CPU, OffloadConfig("blocks", 50))
    swap = offload.swaps["dit"]
    swap.trace = []
    with offload.use("dit"):
        _two_steps(dit, inputs)
    assert swap.k == N_BLOCKS
    assert sorted(e[1] for e in swap.trace if e[0] == "load") == list(range(N_BLOCKS))


class DeferredCopies(SyncCopies):
    """A side stream that runs late: a copy happens only when the compute side waits for it (or
    for a later one), like an asynchronous stream. Using a block before waiting for its copy would
    compute with the slot's previous contents."""

    def __init__(self):
        self.queue, self.finished = [], set()

    def copy(self, dst, src, after=None):
        token = object()
        self.queue.append((token, dst, src, after))
        return token

    def wait(self, ready):
        while ready is not None and ready not in self.finished:
            token, dst, src, _ = self.queue.pop(0)
            dst.copy_(src)
            self.finished.add(token)

    def done(self):
        return object()

    def join(self):
        for _, dst, src, _ in self.queue:
            dst.copy_(src)
        self.queue.clear()


def test_block_swap_waits_for_each_copy_before_use(dit_and_reference):
    dit, inputs, reference = dit_and_reference
    blocks = transformer_blocks(dit)
    for k in (2, 3):
        swap = BlockSwap(blocks, CPU, k, copies=DeferredCopies())
        with swap.active():
            outputs = _two_steps(dit, inputs)
        assert all(torch.equal(a, b) for a, b in zip(outputs, reference))


def test_block_swap_refill_waits_for_the_slot_s_last_user(dit_and_reference):
    """A copy into a slot waits for the event recorded when the slot's previous block finished."""
    dit, inputs, _ = dit_and_reference
    trace = []

    class Recording(SyncCopies):
        def copy(self, dst, src, after=None):
            trace.append(("copy", after))
            return super().copy(dst, src, after)

        def done(self):
            trace.append(("done", token := object()))
            return token

    swap = BlockSwap(transformer_blocks(dit), CPU, 2, copies=Recording())
    swap.trace = trace
    with swap.active():
        _two_steps(dit, inputs)
    slot_of, last_done, pending, running, checked = {}, {}, None, None, 0
    for event in trace:
        if event[0] == "copy":
            pending = event[1]
        elif event[0] == "load":  # follows its copy
            _, block, slot = event
            assert pending is last_done.get(slot)  # None only for a slot never used yet
            checked += pending is not None
            slot_of[block], last_done[slot] = slot, None
        elif event[0] == "run":
            running = event[1]
        else:  # "done" after the running block's forward
            last_done[slot_of[running]] = event[1]
    assert checked == 2 * N_BLOCKS + 1 - 2  # every refill but the first fill of each slot


def test_weights_replaced_between_uses_are_repacked(dit_and_reference):
    _, inputs, reference = dit_and_reference
    model = random_dit(CONFIG).eval()
    offload = offload_components({"dit": model}, CPU, OffloadConfig("blocks", 2))
    linear = model.single_blocks[1].linear2
    with torch.no_grad():  # e.g. a LoRA fused, or another checkpoint loaded, after offload was built
        linear.weight = torch.nn.Parameter(linear.weight * 1.5)
    with torch.inference_mode():
        expected = model(*inputs)  # the new weights, without offload
    with offload.use("dit"), torch.inference_mode():
        got = model(*inputs)
    assert torch.equal(got, expected) and not torch.equal(got, reference[0])


def test_error_inside_use_restores_weights(dit_and_reference):
    dit, inputs, reference = dit_and_reference
    for config in (OffloadConfig("blocks", 2), OffloadConfig("sequential")):
        offload = offload_components({"dit": dit}, CPU, config)
        with pytest.raises(ValueError, match="embeds guidance"), offload.use("dit"):
            dit(*inputs[:5], guidance=None)  # fails after the embedders, before the blocks
        with pytest.raises(RuntimeError, match="boom"), offload.use("dit"):
            with torch.inference_mode():
                dit(*inputs)
            raise RuntimeError("boom")
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in dit.modules())
        with torch.inference_mode():
            assert torch.equal(dit(*inputs), reference[0])
    swap = offload.swaps["dit"] if isinstance(offload, BlockSwapOffload) else None
    assert swap is None or swap.resident() == []


def test_sequential_counts_one_module_at_a_time(dit_and_reference):
    dit, inputs, _ = dit_and_reference
    offload = offload_components({"dit": dit}, CPU, OffloadConfig("sequential"))
    assert isinstance(offload, SequentialOffload)
    with offload.use("dit"):
        _two_steps(dit, inputs)
    assert offload.max_resident == 1 and offload.resident == 0


# ---- the whole pipeline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pipeline():
    from hyvideo.pipeline.options import LoadOptions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline

    pipe = load_pipeline(LoadOptions(model="tiny-random"), RuntimeOptions(device=torch.device("cpu")))
    request = pipe.request("a red fox in the snow", height=32, width=48, video_length=5, infer_steps=2)
    return pipe, request


def assert_offload_modes_equal_none(pipe, request, configs) -> None:
    """Every offload mode of ``configs`` gives ``pipe``'s latents and videos bit for bit."""
    parts = {"text_encoders": pipe.text_encoders, "dit": pipe.dit, "vae": pipe.vae}
    reference = pipe(request, show_progress=False)
    for config in configs:
        pipe.execution = OffloadExecution(offload_components(parts, CPU, config))
        try:
            result = pipe(request, show_progress=False)
        finally:
            pipe.execution.close()
            pipe.execution = Execution()
        assert torch.equal(result.latents, reference.latents), config.mode
        assert torch.equal(result.videos, reference.videos), config.mode


def test_pipeline_modes_are_bit_identical(tiny_pipeline):
    pipe, request = tiny_pipeline
    assert_offload_modes_equal_none(pipe, request, (OffloadConfig("model"), OffloadConfig("sequential"),
                                                    OffloadConfig("blocks", 2)))


@pytest.mark.skipif(compat.accelerator_type() is None, reason="needs an accelerator")
def test_accelerator_block_swap_equal_and_lighter():
    device = compat.current_device()
    config = dataclasses.replace(CONFIG, hidden_size=512, heads_num=8, rope_dim_list=(16, 24, 24),
                                 mm_double_blocks_depth=6, mm_single_blocks_depth=10)
    inputs = [t.to(device) if t is not None else None for t in random_inputs(config, thw=(2, 4, 4))]

    def run(mode):
        dit = random_dit(config)  # on the CPU
        compat.synchronize(device)
        compat.reset_peak_memory_stats(device)
        base = compat.memory_allocated(device)
        offload = offload_components({"dit": dit}, device, OffloadConfig(mode, 2))
        with offload.use("dit"):
            out = [o.cpu() for o in _two_steps(dit, inputs)]
        compat.synchronize(device)
        peak = compat.max_memory_allocated(device) - base
        offload.close()
        return out, peak

    reference, peak_none = run("none")
    for mode in ("model", "sequential", "blocks"):
        out, peak = run(mode)
        assert all(torch.equal(a, b) for a, b in zip(out, reference)), mode
        if mode == "blocks":
            assert peak < 0.5 * peak_none, (peak, peak_none)
