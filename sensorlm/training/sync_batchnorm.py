"""Batch norm whose batch statistics span every data-parallel rank, on CPU (gloo) and GPU.

With per-rank BatchNorm, N workers train a different function than one worker on the same global
batch, and an export keeps rank 0's running statistics. torch's `SyncBatchNorm` fixes that on GPUs
only (it refuses CPU tensors), so `sync_batchnorm` swaps in torch's module on CUDA and this one
elsewhere: the per-channel sum, sum of squares and count are all-reduced with autograd
(`torch.distributed.nn.functional.all_reduce`), so forward and backward equal one process on the
whole batch. Model code stays plain PyTorch; the trainer converts the model when world size > 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """`nn.BatchNorm1d/2d/3d` with statistics over the whole data-parallel batch (any backend)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float32, device=x.device)
        stats = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c: 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm synchronised across ranks: torch's `SyncBatchNorm` on CUDA,
    `DistributedBatchNorm` elsewhere (parameters and running statistics carried over)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, DistributedBatchNorm):
        new = DistributedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child, device))
    return module
