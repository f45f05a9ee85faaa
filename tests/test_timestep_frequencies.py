"""The timestep embedding's fixed frequency tables: the reference's float32 exp, whatever this
machine's exp rounds to, and the difference between the two releases' reference runs."""

from __future__ import annotations

import math

import pytest
import torch

from hyvideo.dit.layers import reference_frequencies, timestep_embedding


def correctly_rounded() -> torch.Tensor:
    args = -math.log(10000.0) * torch.arange(128, dtype=torch.float32) / 128
    return torch.exp(args.double()).float()


@pytest.mark.parametrize("table", ["t2v", "i2v"])
def test_each_frequency_is_within_one_ulp_of_the_exact_value(table):
    got, exact = reference_frequencies(table), correctly_rounded()
    ulp = torch.nextafter(exact, torch.full_like(exact, 2.0)) - exact
    assert got.dtype == torch.float32 and got.shape == (128,)
    assert ((got - exact).abs() <= ulp).all()
    assert got[0] == 1.0 and bool((got[1:] < got[:-1]).all())  # 10000^(-i/128), decreasing


def test_the_two_reference_runs_differ_in_two_entries_by_one_ulp():
    t2v, i2v = reference_frequencies("t2v"), reference_frequencies("i2v")
    differs = (t2v != i2v).nonzero().flatten().tolist()
    assert differs == [12, 13]
    assert i2v[12] == torch.nextafter(t2v[12], torch.tensor(1.0))
    assert i2v[13] == torch.nextafter(t2v[13], torch.tensor(0.0))
    with pytest.raises(ValueError, match="unknown frequency table"):
        reference_frequencies("x")


def test_the_embedding_uses_the_table_and_other_sizes_use_exp():
    t = torch.tensor([0.0, 500.0, 6000.0])
    emb = timestep_embedding(t, table="i2v")
    args = t[:, None] * reference_frequencies("i2v")[None]
    assert torch.equal(emb, torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
    assert not torch.equal(emb, timestep_embedding(t, table="t2v"))  # 6000 * 1 ulp is visible
    small = timestep_embedding(t, dim=8, max_period=100.0)
    freqs = torch.exp(-math.log(100.0) * torch.arange(4, dtype=torch.float32) / 4)
    assert torch.equal(small, torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1))
