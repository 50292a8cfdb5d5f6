"""Synchronised batch norm: two gloo ranks on half batches compute what one process does on the
whole batch (SST's decoder has BatchNorm; per-rank statistics made N workers train another model)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sensorlm.models import create_model
from sensorlm.training.sync_batchnorm import DistributedBatchNorm, sync_batchnorm

B, M, D, H, W = 4, 2, 32, 32, 32


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(B, 1, M * D, H, W, generator=g)
    mask = torch.rand(B, 1, M * D, H, W, generator=g) < 0.3
    padded = torch.zeros(B, M * D, dtype=torch.bool)
    padded[:, 30:32] = True
    land = torch.zeros(B, H, W, dtype=torch.bool)
    land[:, :4] = True
    target = torch.randn(B, 1, H, W, generator=g)
    return x, mask, padded, land, target


def _step(model, x, mask, padded, land, target):
    model.train()
    pred = model(x, mask, padded, land)
    loss = ((pred - target) ** 2).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if "running" in n}
    return loss.detach(), grads, buffers


def _worker(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = sync_batchnorm(create_model("sst_tiny"), torch.device("cpu"))
    assert any(isinstance(m, DistributedBatchNorm) for m in model.modules())
    half = B // world
    local = [t[rank * half:(rank + 1) * half] for t in _batch()]
    loss, grads, buffers = _step(model, *local)
    for g in grads.values():  # DeepSpeed averages gradients over ranks
        dist.all_reduce(g)
        g /= world
    dist.all_reduce(loss)
    if rank == 0:
        torch.save({"loss": loss / world, "grads": grads, "buffers": buffers}, out)
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown: torch 2.13 + gloo children aborted at exit now and then


def test_two_ranks_with_synced_batchnorm_equal_one_process(tmp_path):
    torch.manual_seed(0)
    single = create_model("sst_tiny")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in single.modules())
    loss, grads, buffers = _step(single, *_batch())
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert set(got["grads"]) == set(grads)
    for name, g in grads.items():
        torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
    for name, b in buffers.items():  # running statistics as if one process saw the whole batch
        torch.testing.assert_close(got["buffers"][name], b, rtol=1e-4, atol=1e-6, msg=name)


def test_single_process_and_eval_are_plain_batchnorm():
    bn = torch.nn.BatchNorm2d(3)
    synced = sync_batchnorm(torch.nn.Sequential(bn), torch.device("cpu"))[0]
    assert isinstance(synced, DistributedBatchNorm)
    x = torch.randn(5, 3, 4, 4)
    torch.testing.assert_close(synced(x), torch.nn.BatchNorm2d(3)(x))
    assert set(synced.state_dict()) == set(bn.state_dict())  # exports load into the plain model
