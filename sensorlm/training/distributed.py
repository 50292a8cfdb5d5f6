"""Small helpers over torch.distributed that also work in a single process."""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on `t`, which is also returned)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_json(obj: Any, device: torch.device | None = None) -> list[Any]:
    """`obj` from every rank, in rank order. Sent as JSON bytes in tensors, never pickled
    (``all_gather_object`` would unpickle what other processes send).

    Args:
        obj: a JSON-serialisable value.
        device: where the byte tensors live (the process group's device: CUDA for NCCL).
    """
    if not is_dist():
        return [json.loads(json.dumps(obj))]
    payload = torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8).to(device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = max(int(n.item()) for n in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [json.loads(bytes(t[: int(n.item())].cpu().tolist()).decode("utf-8")) for t, n in zip(gathered, sizes)]


def all_gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's (n_r, ...) rows, concatenated in rank order (n_r may differ), and where this
    rank's rows start in the result. Tensors only: nothing is pickled."""
    if not is_dist():
        return t, 0
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(c.item()) for c in sizes]
    padded = t.new_zeros((max(counts), *t.shape[1:]))
    padded[: t.shape[0]] = t
    gathered = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:c] for g, c in zip(gathered, counts)]), sum(counts[: rank()])
