"""SigLIP (local and distributed) and CLIP losses against direct formulas."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sensorlm.losses import (
    SIGLIP_EXCHANGES,
    clip_loss,
    siglip_loss,
    siglip_loss_distributed,
    siglip_loss_gather,
    siglip_loss_ring,
)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=-1)


def _siglip_loop(zs: np.ndarray, zt: np.ndarray, t_prime: float, bias: float) -> float:
    n = zs.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            s = math.exp(t_prime) * float(zs[i] @ zt[j]) + bias
            y = 1.0 if i == j else -1.0
            total += -math.log(1.0 / (1.0 + math.exp(-y * s)))
    return total / n


def test_siglip_matches_double_loop():
    zs, zt = _unit(6, 5, 0), _unit(6, 5, 1)
    for t_prime, bias in [(math.log(10), -10.0), (0.3, 1.5), (math.log(50), -4.0)]:
        loss = siglip_loss(zs, zt, torch.tensor([t_prime]), torch.tensor([bias]))
        assert loss.shape == () and loss.dtype == torch.float32
        assert loss.item() == pytest.approx(_siglip_loop(zs.numpy(), zt.numpy(), t_prime, bias), rel=1e-5)


def test_seed_mean_normalisation_differs_by_batch_size():
    zs, zt = _unit(5, 4, 2), _unit(5, 4, 3)
    t, b = torch.tensor([1.0]), torch.tensor([-2.0])
    logits = math.e * zs.float() @ zt.float().T - 2.0
    labels = 2 * torch.eye(5) - 1
    seed_mean = -torch.nn.functional.logsigmoid(labels * logits).mean()
    torch.testing.assert_close(siglip_loss(zs, zt, t, b) / 5, seed_mean)


def test_max_temperature_clamps_functionally():
    zs, zt = _unit(4, 3, 4), _unit(4, 3, 5)
    t_prime = torch.nn.Parameter(torch.tensor([math.log(100.0)]))
    bias = torch.tensor([-3.0])
    clamped = siglip_loss(zs, zt, t_prime, bias, max_temperature=10.0)
    torch.testing.assert_close(clamped, siglip_loss(zs, zt, torch.tensor([math.log(10.0)]), bias))
    clamped.backward()
    assert t_prime.grad.item() == 0.0  # above the bound the clamp passes no gradient
    assert t_prime.item() == pytest.approx(math.log(100.0))  # the parameter itself is untouched


def test_siglip_gradients_flow_to_all_inputs():
    zs = _unit(4, 3, 6).float().requires_grad_()
    zt = _unit(4, 3, 7).float().requires_grad_()
    t, b = torch.tensor([0.5], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    siglip_loss(zs, zt, t, b).backward()
    for x in (zs, zt, t, b):
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_siglip_under_bf16_autocast_is_float32():
    zs, zt = _unit(8, 16, 8).float(), _unit(8, 16, 9).float()
    t, b = torch.tensor([math.log(10)]), torch.tensor([-10.0])
    ref = siglip_loss(zs, zt, t, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = siglip_loss(zs.bfloat16(), zt.bfloat16(), t, b)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=0)


@pytest.mark.parametrize(
    "zs_shape, zt_shape, t_shape, needle",
    [
        ((4, 3), (5, 3), (1,), r"sensor \(4, 3\) and text \(5, 3\)"),
        ((4,), (4,), (1,), r"expected two \(B, D\) tensors"),
        ((0, 3), (0, 3), (1,), "empty batch"),
        ((4, 3), (4, 3), (2,), r"t_prime and bias must hold one value each, got shapes \(2,\)"),
    ],
)
def test_siglip_bad_shapes(zs_shape, zt_shape, t_shape, needle):
    with pytest.raises(ValueError, match=needle):
        siglip_loss(torch.zeros(zs_shape), torch.zeros(zt_shape), torch.zeros(t_shape), torch.zeros(1))


def test_distributed_without_process_group_equals_local():
    assert not dist.is_initialized()
    zs, zt = _unit(5, 4, 10), _unit(5, 4, 11)
    t, b = torch.tensor([0.7]), torch.tensor([-2.0])
    torch.testing.assert_close(siglip_loss_distributed(zs, zt, t, b), siglip_loss(zs, zt, t, b))


@pytest.mark.parametrize("exchange", sorted(SIGLIP_EXCHANGES))
def test_every_exchange_without_process_group_equals_local(exchange):
    zs, zt = _unit(5, 4, 12), _unit(5, 4, 13)
    t, b = torch.tensor([0.7]), torch.tensor([-2.0])
    loss = siglip_loss_distributed(zs, zt, t, b, exchange=exchange, max_temperature=1.5)
    torch.testing.assert_close(loss, siglip_loss(zs, zt, t, b, max_temperature=1.5))


@pytest.mark.parametrize("form", [siglip_loss_gather, siglip_loss_ring])
def test_distributed_forms_bad_shapes(form):
    with pytest.raises(ValueError, match=r"^embeddings: .* got sensor \(4, 3\) and text \(4, 2\)$"):
        form(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(1), torch.zeros(1))


def test_unknown_exchange_is_one_line_error():
    with pytest.raises(ValueError, match=r"^exchange: expected one of \['gather', 'ring'\], got 'allgather'$"):
        z = torch.zeros(2, 3)
        siglip_loss_distributed(z, z, torch.zeros(1), torch.zeros(1), exchange="allgather")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Towers(torch.nn.Module):
    """Stand-in for the model: two linear towers plus the SigLIP scalars, identical on each rank."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(123)
        self.sensor = torch.nn.Linear(6, 4)
        self.text = torch.nn.Linear(5, 4)
        self.t_prime = torch.nn.Parameter(torch.tensor([math.log(10.0)]))
        self.bias = torch.nn.Parameter(torch.tensor([-2.0]))

    def forward(self, xs, xt):
        zs = torch.nn.functional.normalize(self.sensor(xs), dim=-1)
        zt = torch.nn.functional.normalize(self.text(xt), dim=-1)
        return zs, zt


def _single_process_reference(seed: int, n: int):
    """The whole batch of `n` pairs through one process, no collectives: inputs, towers (with
    gradients), both embeddings (with gradients) and the loss."""
    g = torch.Generator().manual_seed(seed)
    xs, xt = torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g)
    ref = _Towers()
    zs_ref, zt_ref = ref(xs, xt)
    zs_ref.retain_grad()
    zt_ref.retain_grad()
    ref_loss = siglip_loss(zs_ref, zt_ref, ref.t_prime, ref.bias)
    ref_loss.backward()
    return xs, xt, ref, zs_ref, zt_ref, ref_loss


def _distributed_worker(rank: int, world: int, port: int, local_batch: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        xs, xt, ref, zs_ref, zt_ref, ref_loss = _single_process_reference(7, world * local_batch)

        # This rank's shard, then DDP-style averaging of parameter gradients.
        model = _Towers()
        rows = slice(rank * local_batch, (rank + 1) * local_batch)
        zs, zt = model(xs[rows], xt[rows])
        zs.retain_grad()
        zt.retain_grad()
        loss = siglip_loss_distributed(zs, zt, model.t_prime, model.bias)
        loss.backward()
        torch.testing.assert_close(loss, ref_loss, msg=lambda m: f"rank {rank} loss: {m}")
        for name, p in model.named_parameters():
            dist.all_reduce(p.grad)
            p.grad /= world
            torch.testing.assert_close(
                p.grad, dict(ref.named_parameters())[name].grad, msg=lambda m, name=name: f"rank {rank} {name}: {m}"
            )
        # Local embeddings receive world x the global gradient (the all_gather backward sums every
        # rank's copy); the 1/world of gradient averaging brings the parameters back to exact.
        torch.testing.assert_close(zs.grad / world, zs_ref.grad[rows], msg=lambda m: f"rank {rank} zs grad: {m}")
        torch.testing.assert_close(zt.grad / world, zt_ref.grad[rows], msg=lambda m: f"rank {rank} zt grad: {m}")
    finally:
        dist.destroy_process_group()
    # Skip interpreter teardown: torch 2.13 + gloo aborted about 1 child in 3 at exit here
    # ("terminate called without an active exception", SIGABRT) after the test had passed.
    os._exit(0)


def test_distributed_two_gloo_ranks_match_single_process():
    mp.spawn(_distributed_worker, args=(2, _free_port(), 3), nprocs=2, join=True)


def _exchange_worker(rank: int, world: int, port: int, local_batch: int) -> None:
    """Ring against gather against one process, for the loss and every gradient."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        xs, xt, ref, zs_ref, zt_ref, ref_loss = _single_process_reference(11, world * local_batch)
        ref_grads = {name: p.grad for name, p in ref.named_parameters()}

        rows = slice(rank * local_batch, (rank + 1) * local_batch)
        grads = {}
        for exchange in ("gather", "ring"):
            model = _Towers()
            zs, zt = model(xs[rows], xt[rows])
            zs.retain_grad()
            zt.retain_grad()
            loss = siglip_loss_distributed(zs, zt, model.t_prime, model.bias, exchange=exchange)
            loss.backward()
            assert loss.dtype == torch.float32
            torch.testing.assert_close(loss, ref_loss, msg=lambda m, e=exchange: f"rank {rank} {e} loss: {m}")
            grads[exchange] = {"zs": zs.grad, "zt": zt.grad, **{k: p.grad.clone() for k, p in model.named_parameters()}}
            # Embeddings: world x the single-process gradient of this rank's rows, in both forms.
            for key, full in (("zs", zs_ref.grad), ("zt", zt_ref.grad)):
                torch.testing.assert_close(grads[exchange][key] / world, full[rows], msg=lambda m, k=key: f"{k}: {m}")
            # Parameters, averaged over ranks as DDP / DeepSpeed do: the single-process gradient.
            for name, p in model.named_parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
                torch.testing.assert_close(
                    p.grad, ref_grads[name], msg=lambda m, name=name, e=exchange: f"rank {rank} {e} {name}: {m}"
                )
        # Per rank, ring == gather for everything but the scalars (W * dL_r/dt against dL/dt).
        for key, value in grads["gather"].items():
            if key not in ("t_prime", "bias"):
                torch.testing.assert_close(grads["ring"][key], value, msg=lambda m, key=key: f"rank {rank} {key}: {m}")

        # The clamp on the temperature and autocast behave as in the gather form.
        zs, zt = _unit(local_batch, 4, 20 + rank).float(), _unit(local_batch, 4, 30 + rank).float()
        t_prime = torch.nn.Parameter(torch.tensor([math.log(100.0)]))
        bias = torch.tensor([-3.0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ring = siglip_loss_ring(zs, zt, t_prime, bias, max_temperature=10.0)
        gather = siglip_loss_gather(zs, zt, t_prime, bias, max_temperature=10.0)
        assert ring.dtype == torch.float32
        torch.testing.assert_close(ring, gather)
        ring.backward()
        assert t_prime.grad.item() == 0.0
        if world == 4:
            _subgroup_check(rank, local_batch)
    finally:
        dist.destroy_process_group()
    os._exit(0)  # see _distributed_worker


def _subgroup_check(rank: int, local_batch: int) -> None:
    """Both forms on the groups {0, 2} and {1, 3}: group ranks are not global ranks."""
    groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]  # every rank creates every group
    members = [rank % 2, rank % 2 + 2]
    zs_all = torch.cat([_unit(local_batch, 4, 40 + r) for r in members]).float()
    zt_all = torch.cat([_unit(local_batch, 4, 50 + r) for r in members]).float()
    t, b = torch.tensor([1.2]), torch.tensor([-1.0])
    zs_ref = zs_all.clone().requires_grad_()
    ref = siglip_loss(zs_ref, zt_all, t, b)
    ref.backward()
    rows = slice(members.index(rank) * local_batch, (members.index(rank) + 1) * local_batch)
    for form in (siglip_loss_gather, siglip_loss_ring):
        zs = zs_all[rows].clone().requires_grad_()
        loss = form(zs, zt_all[rows], t, b, group=groups[rank % 2])
        loss.backward()
        torch.testing.assert_close(loss, ref, msg=lambda m, f=form: f"rank {rank} {f.__name__}: {m}")
        torch.testing.assert_close(zs.grad / 2, zs_ref.grad[rows], msg=lambda m, f=form: f"{f.__name__}: {m}")


@pytest.mark.parametrize("world, local_batch", [(2, 3), (4, 2)])
def test_ring_equals_gather_equals_single_process(world, local_batch):
    mp.spawn(_exchange_worker, args=(world, _free_port(), local_batch), nprocs=world, join=True)


def _clip_loop(a: np.ndarray, b: np.ndarray) -> float:
    def ce(lg: np.ndarray) -> float:
        n = lg.shape[0]
        total = 0.0
        for i in range(n):
            total += -(lg[i, i] - math.log(sum(math.exp(lg[i, j]) for j in range(n))))
        return total / n

    return 0.5 * (ce(a) + ce(b))


def test_clip_loss_matches_formula():
    g = torch.Generator().manual_seed(3)
    logits = 5 * torch.randn(6, 6, generator=g)
    loss = clip_loss(logits, logits.T)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(_clip_loop(logits.numpy(), logits.T.numpy()), rel=1e-5)
    other = torch.randn(6, 6, generator=g)
    assert clip_loss(logits, other).item() == pytest.approx(_clip_loop(logits.numpy(), other.numpy()), rel=1e-5)


@pytest.mark.parametrize(
    "a, b, needle",
    [
        ((3, 4), (3, 4), r"logits_a_b: expected a non-empty square \(B, B\) matrix, got \(3, 4\)"),
        ((3, 3), (3,), r"logits_b_a: expected a non-empty square"),
        ((3, 3), (4, 4), r"logits shapes differ: \(3, 3\) vs \(4, 4\)"),
    ],
)
def test_clip_loss_bad_shapes(a, b, needle):
    with pytest.raises(ValueError, match=needle):
        clip_loss(torch.zeros(a), torch.zeros(b))
