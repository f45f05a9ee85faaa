"""hyvideo.compat: one device/version layer over torch.accelerator and the per-backend modules.

The CPU machine has no accelerator, so the accelerator paths are driven with stand-in backends:
``torch.accelerator`` removed (torch < 2.6) with a fake ``torch.cuda``, or replaced by a fake
API that lacks the memory functions (torch 2.6-2.8).
"""

from __future__ import annotations

import types

import pytest
import torch

from hyvideo import compat

pytestmark = pytest.mark.smoke

GPU_TYPE = torch.cuda.__name__.rpartition(".")[2]  # the device type of torch.cuda (no literal)


class Recorder:
    """A stand-in backend module: counts calls, answers fixed values."""

    def __init__(self, **answers):
        self.calls: list[tuple[str, tuple]] = []
        self.answers = answers

    def __getattr__(self, name):
        if name not in self.answers:
            raise AttributeError(name)

        def fn(*args, **kwargs):
            args += tuple(kwargs.values())
            self.calls.append((name, args))
            value = self.answers[name]
            return value(*args) if callable(value) else value
        return fn


@pytest.fixture
def legacy_gpu(monkeypatch):
    """torch without torch.accelerator, with one available device in torch.cuda."""
    monkeypatch.delattr(torch, "accelerator", raising=False)
    fake = Recorder(is_available=True, device_count=3, current_device=1, synchronize=None,
                    memory_allocated=100, max_memory_allocated=250, reset_peak_memory_stats=None,
                    empty_cache=None, set_device=None, Stream=lambda device: ("stream", device),
                    current_stream=lambda device: ("current", device),
                    stream=lambda s: ("context", s))
    fake.__name__ = torch.cuda.__name__
    monkeypatch.setattr(torch, "cuda", fake)
    return fake


def test_torch_version_and_message():
    assert compat.torch_version() >= compat.MIN_TORCH
    msg = compat.needs_torch("a feature", (9, 1))
    assert "a feature" in msg and "torch >= 9.1" in msg and torch.__version__ in msg


def test_version_parsing_of_local_builds(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu124")
    assert compat.torch_version() == (2, 5)
    monkeypatch.setattr(torch, "__version__", "2.7.0a0+git1234")
    assert compat.torch_version() == (2, 7)


def test_agrees_with_torch_accelerator_when_present():
    api = getattr(torch, "accelerator", None)
    if api is None:
        pytest.skip(f"torch {torch.__version__} has no torch.accelerator")
    expected = api.current_accelerator().type if api.is_available() else None
    assert compat.accelerator_type() == expected
    assert compat.device_count() == (api.device_count() if expected else 0)


@pytest.mark.skipif(compat.accelerator_type() is not None, reason="needs a CPU-only machine")
def test_cpu_only_machine():
    assert compat.current_device() == torch.device("cpu")
    assert compat.device_count() == 0
    assert not compat.is_accelerator("cpu")
    assert not compat.is_accelerator(torch.device(GPU_TYPE, 0))
    with pytest.raises(RuntimeError, match="no accelerator"):
        compat.set_device_index(0)


def test_host_devices_are_no_ops():
    for device in ("cpu", torch.device("meta")):
        compat.synchronize(device)
        compat.empty_cache(device)
        compat.reset_peak_memory_stats(device)
        assert compat.memory_allocated(device) is None
        assert compat.max_memory_allocated(device) is None


def test_without_torch_accelerator_uses_the_device_module(legacy_gpu):
    assert compat.accelerator_type() == GPU_TYPE
    assert compat.current_device() == torch.device(GPU_TYPE, 1)
    assert compat.is_accelerator(torch.device(GPU_TYPE, 0)) and not compat.is_accelerator("cpu")
    assert compat.device_count() == 3
    assert compat.memory_allocated() == 100
    assert compat.max_memory_allocated(torch.device(GPU_TYPE, 2)) == 250
    compat.reset_peak_memory_stats(torch.device(GPU_TYPE, 2))
    compat.synchronize()
    compat.empty_cache()
    compat.set_device_index(2)
    names = [(name, args) for name, args in legacy_gpu.calls if name != "is_available"]
    assert ("max_memory_allocated", (torch.device(GPU_TYPE, 2),)) in names
    assert ("reset_peak_memory_stats", (torch.device(GPU_TYPE, 2),)) in names
    assert ("synchronize", (torch.device(GPU_TYPE, 1),)) in names
    assert ("empty_cache", ()) in names and ("set_device", (2,)) in names


def test_without_torch_accelerator_streams(legacy_gpu):
    device = torch.device(GPU_TYPE, 0)
    assert compat.new_stream(device) == ("stream", device)
    assert compat.current_stream(device) == ("current", device)
    side = types.SimpleNamespace(device=device)  # an old torch stream: not a context manager
    assert compat.stream_context(side) == ("context", side)


def test_stream_that_is_a_context_manager_is_used_directly():
    class Stream:
        device = torch.device("cpu")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    s = Stream()
    assert compat.stream_context(s) is s


def test_without_any_accelerator(monkeypatch):
    monkeypatch.delattr(torch, "accelerator", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("xpu", "mtia"):
        if hasattr(torch, name):
            monkeypatch.setattr(getattr(torch, name), "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert compat.accelerator_type() is None
    assert compat.current_device() == torch.device("cpu")
    assert compat.device_count() == 0


def test_accelerator_api_preferred_and_missing_functions_fall_back(legacy_gpu, monkeypatch):
    # torch 2.6-2.8: torch.accelerator exists but has no memory statistics yet.
    api = Recorder(is_available=True, current_accelerator=torch.device(GPU_TYPE),
                   current_device_index=0, device_count=2, synchronize=None)
    monkeypatch.setattr(torch, "accelerator", api, raising=False)
    assert compat.accelerator_type() == GPU_TYPE and compat.device_count() == 2
    compat.synchronize()
    assert ("synchronize", (torch.device(GPU_TYPE, 0),)) in api.calls
    assert compat.max_memory_allocated() == 250  # from the device module
    assert ("max_memory_allocated", (torch.device(GPU_TYPE, 0),)) in legacy_gpu.calls
    assert not any(name == "synchronize" for name, _ in legacy_gpu.calls)


def test_flex_block_mask_flag_matches_this_torch():
    problem = compat.flex_block_mask_problem()
    if compat.torch_version() < compat.FLEX_SEQ_LENGTHS_TORCH:
        assert problem is not None and "torch >= 2.6" in problem and torch.__version__ in problem
        with pytest.raises(RuntimeError, match="needs torch >= 2.6"):
            compat.block_mask_from_kv_blocks(*[torch.zeros(1, 1, 1, dtype=torch.int32)] * 2, None,
                                             None, block_size=128, mask_mod=None,
                                             seq_lengths=(200, 200))
        return
    assert problem is None
    # 200 tokens in blocks of 128: the last block is partial, which only seq_lengths expresses.
    one = torch.ones(1, 1, 2, dtype=torch.int32)
    idx = torch.tensor([[[[0, 1], [1, 0]]]], dtype=torch.int32)
    mask = compat.block_mask_from_kv_blocks(one, idx[:, :, :, :1].clone(), one, idx[:, :, :, 1:]
                                            .clone(), block_size=128,
                                            mask_mod=lambda b, h, q, k: q >= k,
                                            seq_lengths=(200, 200))
    assert tuple(mask.seq_lengths) == (200, 200)


def test_flex_switched_off_on_an_old_block_mask(monkeypatch):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")

    def old_from_kv_blocks(kv_num_blocks, kv_indices, full_kv_num_blocks=None,
                           full_kv_indices=None, BLOCK_SIZE=128, mask_mod=None):
        raise AssertionError("must not be called")

    monkeypatch.setattr(flex.BlockMask, "from_kv_blocks", staticmethod(old_from_kv_blocks))
    compat.flex_block_mask_problem.cache_clear()
    try:
        problem = compat.flex_block_mask_problem()
        assert "seq_lengths" in problem and "torch >= 2.6" in problem
        with pytest.raises(RuntimeError, match="seq_lengths"):
            compat.block_mask_from_kv_blocks(None, None, None, None, block_size=128,
                                             mask_mod=None, seq_lengths=(1, 1))
    finally:
        compat.flex_block_mask_problem.cache_clear()


def test_all_gather_buffers_are_writable_outside_inference_mode(tmp_path):
    """gloo writes the gathered data on its own thread, where inference tensors are read-only."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                            world_size=1)
    try:
        with torch.inference_mode():
            x = torch.arange(6.0).reshape(2, 3)
            parts = compat.all_gather(x.t())  # a non-contiguous input is fine too
        assert len(parts) == 1 and not parts[0].is_inference()
        torch.testing.assert_close(parts[0], x.t())
    finally:
        dist.destroy_process_group()
