"""GPU training-step benchmark: samples/s, model TFLOP/s, MFU and peak memory.

Four ways of running one training step of a paper preset (`sensorlm_vitb_10_2`, `sst_base`):

  ref      (1) a plain eager PyTorch reference of the same architecture: every
               `blocks.Attention` is swapped for `nn.MultiheadAttention` with the same weights
               (same parameter count, asserted), float32 with default torch settings (TF32 off
               for matmuls), `torch.optim.AdamW` with its defaults (foreach).
  shipped  (2) sensorlm's step without DeepSpeed: bf16 autocast over fp32 weights,
               `F.scaled_dot_product_attention` (backend chosen below), fused torch AdamW with
               the trainer's parameter groups, regional `torch.compile` of the transformer
               blocks where the ablation shows it helps.
  zero2    (3) the same model through `deepspeed.initialize` with the config the trainer
               generates (`build_deepspeed_config`, ZeRO-2, bf16 weights + fp32 master copy,
               the trainer's fused torch AdamW as client optimizer), compiled blocks; the
               "aligned groups" rows move shape-(1,) scalars to the end of their parameter
               group (see `aligned_param_groups`).
  zero3    (4) ZeRO-3 + activation checkpointing (where the model has it), eager, at the
               largest batch that fits (found from a linear fit of peak memory over batch).

Every mode clips gradients at 1.0 (the trainer's default) and runs forward + loss + backward +
clip + optimizer step. SensorLM batches are random sensor days (B, 1440, 34) with captions of
64 tokens whose padding starts at a random position in [16, 64]; the missing-minute mask is
None unless the label says "masked" (then ~10% of the 10-minute patches are fully missing).

Model FLOPs (counted analytically, multiply-add = 2 FLOPs, matmuls / convolutions / attention
only; norms, activations, softmax and the optimizer are not counted):

  transformer block over n tokens, width d, MLP hidden h = mlp_ratio * d:
      F_block(n) = 2*n*d*3d (qkv) + 2*n*d*d (out proj) + 2*2*n*d*h (MLP)   [= 24*n*d^2 at h = 4d]
                 + 4*n^2*d (scores Q K^T and weights x V, all heads together)
  sensor tower (n_s = (T/pt) * (C/pc) = 144 * 17 = 2448 tokens):
      2*n_s*d*pt*pc (patch conv) + depth * F_block(n_s)
      + MAP head: 2*d*d (probe query) + 2*n_s*d*2d (keys, values) + 4*n_s*d (attention)
                  + 2*d*d (out proj) + 4*d*h (MLP on the probe)
  text tower (n_t = 64 tokens): depth * F_block(n_t) + 2*d*e (final projection)
  SigLIP logits: 2*B^2*e per batch
  SST: Conv3d 2*N*(2*pt*ph*pw)*E over N = M*(D/pt)*(H/ph)*(W/pw) tokens, day scoring
      2*N*(E^2+E), cross-month attention over S*M tokens (S = spatial patches), month scoring,
      depth * F_block(S), decoder 1x1 conv 2*S*E*c, ConvTranspose 2*S*c^2*k^2, refine
      2*H*W*c^2*(9+1), head 2*H*W*c.
  training step = 3 x forward (backward = 2 x forward), per the usual MFU convention; activation
  checkpointing recomputes the forward (4 x forward of hardware work) but MFU counts 3 x.

`--check-flops` compares these formulas against `torch.utils.flop_counter` on the meta device.

Usage (GPU): python bench/step.py --out $OUT          (see bench/README.md)
       (CPU smoke test of every code path): python bench/step.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorlm.losses import siglip_loss  # noqa: E402
from sensorlm.models import create_model, model_config  # noqa: E402
from sensorlm.models.blocks import Attention, TransformerBlock  # noqa: E402
from sensorlm.models.sensorlm import SensorLMConfig  # noqa: E402
from sensorlm.models.sst import SSTConfig, month_of_year_from_last  # noqa: E402
from sensorlm.training.optim import build_optimizer  # noqa: E402

# Dense bf16 tensor-core rate on the datasheet (H100 SXM / H200: 989.4 TFLOP/s without sparsity).
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


# ------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------


def block_flops(n: int, d: int, hidden: int) -> dict[str, float]:
    """Forward FLOPs of one pre-norm transformer block over n tokens (per sample)."""
    return {"linear": 2 * n * d * 3 * d + 2 * n * d * d + 4 * n * d * hidden, "attention": 4 * n * n * d}


def sensorlm_forward_flops(cfg: SensorLMConfig) -> dict[str, float]:
    """Per-sample forward FLOPs of the ViT SensorLM towers (the SigLIP logits are per batch)."""
    s, t = cfg.sensor, cfg.text
    if cfg.sensor_tower != "vit":
        raise ValueError("FLOP formula only for the ViT sensor tower")
    d, n = s.width, s.num_tokens
    h = int(d * s.mlp_ratio)
    blk = block_flops(n, d, h)
    out = {
        "sensor_patch": 2 * n * d * s.patch[0] * s.patch[1],
        "sensor_linear": s.depth * blk["linear"],
        "sensor_attention": s.depth * blk["attention"],
        "sensor_head": (2 * d * d + 2 * n * d * 2 * d + 4 * n * d + 2 * d * d + 4 * d * h) if s.pooling == "map" else 0,
    }
    td, tn, th = t.width, t.context_len, int(t.width * t.mlp_ratio)
    tblk = block_flops(tn, td, th)
    out["text_linear"] = t.depth * tblk["linear"] + 2 * td * t.embed_dim
    out["text_attention"] = t.depth * tblk["attention"]
    if s.width != t.embed_dim:
        out["sensor_proj"] = 2 * s.width * t.embed_dim
    return out


def sst_forward_flops(cfg: SSTConfig) -> dict[str, float]:
    """Per-sample forward FLOPs of the SST SpatioTemporalModel."""
    pt, ph, pw = cfg.patch
    gh, gw = cfg.grid
    S = gh * gw
    tpm = cfg.tokens_per_month
    N = cfg.months * tpm * S
    E, c, M = cfg.embed_dim, cfg.hidden, cfg.months
    hid = int(E * cfg.mlp_ratio)
    k2 = (ph + 2 * cfg.overlap) * (pw + 2 * cfg.overlap)
    blk = block_flops(S, E, hid)
    return {
        "video_conv3d": 2 * N * (2 * pt * ph * pw) * E,
        "day_score": 2 * N * (E * E + E),
        "month_attention": 2 * S * M * E * 3 * E + 4 * S * M * M * E + 2 * S * M * E * E,
        "month_score": 2 * S * M * (E * E + E),
        "spatial_linear": cfg.depth * blk["linear"],
        "spatial_attention": cfg.depth * blk["attention"],
        "decoder": 2 * S * E * c + 2 * S * c * c * k2 + 2 * cfg.height * cfg.width * c * c * 10
        + 2 * cfg.height * cfg.width * c,
    }


def train_flops_per_step(preset: str, batch: int) -> tuple[float, dict[str, float]]:
    """Model FLOPs of one training step (3 x forward) and the per-sample forward breakdown."""
    cfg = model_config(preset)
    if isinstance(cfg, SensorLMConfig):
        parts = sensorlm_forward_flops(cfg)
        fwd = batch * sum(parts.values()) + 2 * batch * batch * cfg.text.embed_dim
    elif isinstance(cfg, SSTConfig):
        parts = sst_forward_flops(cfg)
        fwd = batch * sum(parts.values())
    else:
        raise ValueError(f"no FLOP formula for preset {preset!r}")
    return 3.0 * fwd, parts


# ------------------------------------------------------------------------------------------
# Models, batches and steps
# ------------------------------------------------------------------------------------------


class RefAttention(nn.Module):
    """`blocks.Attention` re-expressed with `nn.MultiheadAttention` (the plain reference).

    Args:
        src: the `Attention` whose weights are copied (qkv rows are [q; k; v], heads contiguous,
            the layout of `in_proj_weight`), so the reference computes the same function.
    """

    def __init__(self, src: Attention):
        super().__init__()
        dim = src.proj.in_features
        if src.qkv.bias is None:
            raise ValueError("reference attention needs qkv_bias=True (nn.MultiheadAttention has one bias)")
        self.mha = nn.MultiheadAttention(dim, src.num_heads, dropout=src.attn_drop, bias=True, batch_first=True)
        with torch.no_grad():
            self.mha.in_proj_weight.copy_(src.qkv.weight)
            self.mha.in_proj_bias.copy_(src.qkv.bias)
            self.mha.out_proj.weight.copy_(src.proj.weight)
            self.mha.out_proj.bias.copy_(src.proj.bias)
        self.proj_drop = src.proj_drop

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        # blocks: True = attend; nn.MultiheadAttention: True = ignore. need_weights=False lets
        # MHA use F.scaled_dot_product_attention instead of materialising the weights.
        ignore = None if key_padding_mask is None else ~key_padding_mask.bool()
        out, _ = self.mha(x, x, x, key_padding_mask=ignore, need_weights=False)
        return self.proj_drop(out)


def reference_model(preset: str, seed: int = 0) -> nn.Module:
    """The preset's model with every `blocks.Attention` replaced by `RefAttention`."""
    torch.manual_seed(seed)
    model = create_model(preset)
    n_before = sum(p.numel() for p in model.parameters())
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Attention):
                setattr(module, name, RefAttention(child))
    n_after = sum(p.numel() for p in model.parameters())
    assert n_before == n_after, f"reference has {n_after} parameters, the model {n_before}"
    return model


REGION_TYPES = (TransformerBlock, nn.TransformerEncoderLayer)


def compile_regions(model: nn.Module) -> int:
    """torch.compile each transformer block in place (regional compilation).

    All blocks share one code object, so each distinct input signature compiles once and the
    12 blocks reuse it. The batch dimension is marked dynamic before entering the compiled
    region, so other batch sizes do not recompile.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, REGION_TYPES):
            inner = torch.compile(m.forward)

            def forward(x, *args, _inner=inner, **kwargs):
                torch._dynamo.maybe_mark_dynamic(x, 0)
                for a in list(args) + list(kwargs.values()):
                    if torch.is_tensor(a) and a.ndim >= 1 and a.shape[0] == x.shape[0]:
                        torch._dynamo.maybe_mark_dynamic(a, 0)
                return _inner(x, *args, **kwargs)

            m.forward = forward
            n += 1
    return n


def make_batch(preset: str, batch: int, device: torch.device, masked: bool = False, seed: int = 0) -> dict:
    """Random inputs of the preset's shapes (never zeros: see METHOD.md)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    cfg = model_config(preset)
    if isinstance(cfg, SensorLMConfig):
        T, C = cfg.sensor.input_len, cfg.sensor.num_channels
        L, V = cfg.text.context_len, cfg.text.vocab_size
        sensor = torch.randn(batch, T, C, generator=g)
        ids = torch.randint(1, V, (batch, L), generator=g)
        lengths = torch.randint(L // 4, L + 1, (batch, 1), generator=g)
        am = (torch.arange(L)[None, :] < lengths).long()
        ids = ids.masked_fill(am == 0, cfg.text.pad_id)
        missing = None
        if masked:
            pt = cfg.sensor.patch[0]
            patch_missing = torch.rand(batch, T // pt, generator=g) < 0.1
            missing = patch_missing.repeat_interleave(pt, dim=1)
        b = {"sensor": sensor, "input_ids": ids, "attention_mask": am, "missing": missing}
    else:
        days = cfg.months * cfg.days_per_month
        H, W = cfg.height, cfg.width
        x = torch.randn(batch, 1, days, H, W, generator=g)
        mask = (torch.rand(batch, 1, days, H, W, generator=g) < 0.3).to(torch.uint8)
        padded = torch.zeros(batch, days, dtype=torch.bool)
        for m, real in enumerate((31, 30, 31)[: cfg.months]):
            padded[:, m * cfg.days_per_month + real : (m + 1) * cfg.days_per_month] = True
        land = torch.rand(batch, H // 8, W // 8, generator=g) < 0.3
        land = land.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :H, :W]
        month = torch.randint(1, 13, (batch,), generator=g)
        b = {
            "daily": x,
            "mask": mask,
            "padded_days": padded,
            "land": land,
            "target": torch.randn(batch, H, W, generator=g),
            "month_of_year": month_of_year_from_last(month, cfg.months),
        }
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}


def forward_loss(model: nn.Module, b: dict, half_inputs: bool = False, loss_ctx=contextlib.nullcontext) -> torch.Tensor:
    """Forward + loss of one batch (the trainer's task losses). `model` may be a DeepSpeed engine.

    Args:
        half_inputs: cast the float inputs to bf16 (DeepSpeed's bf16 mode casts weights, not inputs).
        loss_ctx: context around the loss alone (ZeRO-3 gathers t_prime/bias there: they are
            used outside any module's forward, where ZeRO-3 has partitioned them away).
    """
    module = getattr(model, "module", model)
    cast = (lambda t: t.to(torch.bfloat16)) if half_inputs else (lambda t: t)
    if "sensor" in b:
        out = model(cast(b["sensor"]), b["input_ids"], b["attention_mask"], b["missing"], validate=False)
        with loss_ctx():
            return siglip_loss(out["sensor_emb"], out["text_emb"], module.t_prime, module.bias)
    pred = model(cast(b["daily"]), b["mask"], b["padded_days"], b["land"], b["month_of_year"])[:, 0].float()
    ocean = (~b["land"]).float()
    return ((pred - b["target"]) ** 2 * ocean).sum() / ocean.sum().clamp_min(1)


def aligned_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainer's two AdamW groups, with tensors whose size is not a multiple of 8 moved last.

    DeepSpeed's ZeRO-1/2 flattens each group into one buffer, tensors back to back. The SigLIP
    scalars t_prime and bias (shape (1,)) come first in `named_parameters()` (a module's own
    parameters precede its children's), so every later bf16 tensor starts 4 bytes off a 16-byte
    boundary and cuBLAS falls back to slow `align2` kernels for the biased forward GEMMs.
    """
    from sensorlm.training.optim import param_groups

    groups = param_groups(model, weight_decay)
    for g in groups:
        g["params"] = sorted(g["params"], key=lambda p: p.numel() % 8 != 0)  # stable: order otherwise kept
    return groups


class TorchStep:
    """forward + loss + backward + clip + optimizer step, without DeepSpeed."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, autocast: bool, device: torch.device):
        self.model, self.opt, self.autocast, self.device = model, opt, autocast, device
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, b: dict) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = forward_loss(self.model, b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def close(self) -> None:
        pass


class DeepSpeedStep:
    """The same step through a DeepSpeed engine built from the trainer's generated config."""

    def __init__(self, model: nn.Module, batch: int, zero_stage: int, ckpt: bool, device: torch.device,
                 aligned: bool = False, mem_efficient_linear: bool = True):
        import deepspeed

        from sensorlm.training.config import ScalingSection, TrainConfig
        from sensorlm.training.deepspeed_config import build_deepspeed_config

        cfg = TrainConfig(
            batch_size=batch,
            scaling=ScalingSection(
                num_workers=1, use_gpu=device.type == "cuda", zero_stage=zero_stage, activation_checkpointing=ckpt
            ),
        )
        self.ds_config = build_deepspeed_config(cfg, world_size=1)
        self.notes: list[str] = []
        if device.type != "cuda":
            self.ds_config["bf16"] = {"enabled": True}
        if zero_stage == 3 and not mem_efficient_linear:
            self.ds_config["zero_optimization"]["memory_efficient_linear"] = False
            self.notes.append("memory_efficient_linear=false")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            # DeepSpeed 0.19.8 casts parameters to bf16 but keeps buffers fp32; batch_norm then
            # refuses bf16 weights with fp32 running statistics. Cast the buffers too.
            self.ds_config.setdefault("data_types", {})["buffer_dtype"] = "bf16"
            self.notes.append("buffer_dtype=bf16 (BatchNorm)")
        if aligned:
            opt = torch.optim.AdamW(aligned_param_groups(model, 1e-4), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, fused=True)
            self.notes.append("param groups aligned (scalars last)")
        else:
            opt = build_optimizer(model, 1e-4, 1e-4, (0.9, 0.999), 1e-8, fused=True)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=self.ds_config)
        self.loss_ctx = contextlib.nullcontext
        module = self.engine.module
        if zero_stage == 3 and hasattr(module, "t_prime"):
            self.loss_ctx = lambda: deepspeed.zero.GatheredParameters([module.t_prime, module.bias], modifier_rank=None)
            self.notes.append("loss under GatheredParameters(t_prime, bias)")

    def __call__(self, b: dict) -> torch.Tensor:
        # DeepSpeed's bf16 mode turns the module's weights to bf16 but does not cast inputs.
        loss = forward_loss(self.engine, b, half_inputs=self.engine.bfloat16_enabled(), loss_ctx=self.loss_ctx)
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.destroy()
        self.engine = None
        restore_linear()


def restore_linear() -> None:
    """ZeRO-3 replaces F.linear process-wide by its memory-efficient autograd Function and leaves
    it there ("This will persist unless manually reset"); later configurations must not run on it."""
    with contextlib.suppress(ImportError):
        from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses as C

        if hasattr(C, "linear_bk"):
            torch.nn.functional.linear = C.linear_bk


def ensure_dist(device: torch.device) -> None:
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(k, v)
    deepspeed.init_distributed("nccl" if device.type == "cuda" else "gloo")
    import logging

    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)  # its per-engine config dump would bury the results


# ------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.t0 = time.perf_counter()
        self.peak_tflops: float | None = None
        self.datasheet_tflops: float | None = None
        self.results: list[dict] = []
        self.out = Path(args.out) if args.out else None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        self.attn_backend = "default"  # chosen by the microbenchmark
        self.active_attn = "default"  # in force now (see attention_priority)

    # --- bookkeeping -------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def time_left(self) -> bool:
        return self.elapsed() < self.args.deadline_s

    def log(self, rec: dict) -> None:
        rec = {"t": round(self.elapsed(), 1), **rec}
        self.results.append(rec)
        print(json.dumps(rec), flush=True)
        if self.out:
            with open(self.out / "step.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def cleanup(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # --- ceilings ----------------------------------------------------------------------
    def measure_peak(self) -> None:
        """bf16 matmul rate on the spot (8192^3 on random data, median of 20 after warm-up)."""
        if self.device.type != "cuda":
            return
        n = 8192
        a = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        for _ in range(5):
            a @ b
        times = []
        for _ in range(20):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            a @ b
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) / 1e3)
        self.peak_tflops = 2 * n**3 / statistics.median(times) / 1e12
        name = torch.cuda.get_device_name()
        self.datasheet_tflops = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
        self.log({"kind": "peak", "bf16_matmul_tflops": round(self.peak_tflops, 1), "datasheet": self.datasheet_tflops})
        del a, b
        self.cleanup()

    def attention_microbench(self) -> None:
        """fwd+bwd of the sensor tower's attention (B=16, 12 heads, 2448 tokens, head dim 64)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        B, h, n, hd = (16, 12, 2448, 64) if self.device.type == "cuda" else (1, 2, 64, 16)
        flops = 3 * 4 * B * h * n * n * hd
        g = torch.Generator(device="cpu").manual_seed(1)
        q, k, v = (torch.randn(B, h, n, hd, generator=g).to(self.device, torch.bfloat16).requires_grad_() for _ in range(3))
        keep = torch.rand(B, n, generator=g) > 0.1
        mask = keep[:, None, None, :].to(self.device)
        do = torch.randn(B, h, n, hd, generator=g).to(self.device, torch.bfloat16)
        ref = None
        best = None
        cases = [("default", None, False), ("flash", SDPBackend.FLASH_ATTENTION, False),
                 ("cudnn", SDPBackend.CUDNN_ATTENTION, False), ("efficient", SDPBackend.EFFICIENT_ATTENTION, False),
                 ("default", None, True), ("cudnn", SDPBackend.CUDNN_ATTENTION, True),
                 ("efficient", SDPBackend.EFFICIENT_ATTENTION, True)]
        for name, backend, masked in cases:
            ctx = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
            am = mask if masked else None
            try:
                with ctx:
                    def run():
                        q.grad = k.grad = v.grad = None
                        o = F.scaled_dot_product_attention(q, k, v, attn_mask=am)
                        o.backward(do)
                        return o
                    o = run()
                    o_det = o.detach().float()
                    self.sync()
                    ts = self._time(run, warmup=2, iters=8)
                if not masked and ref is None:
                    ref = o_det
                err = None if masked or ref is None else float((o_det - ref).norm() / ref.norm())
                tfl = flops / ts / 1e12
                self.log({"kind": "attention", "backend": name, "masked": masked, "ms": round(ts * 1e3, 3),
                          "tflops_fwd_bwd_3x": round(tfl, 1), "rel_err_vs_first": err})
                if not masked and name in ("flash", "cudnn") and (best is None or ts < best[1]):
                    best = (name, ts)
            except Exception as e:  # a backend refusing these shapes is a result, not a failure
                self.log({"kind": "attention", "backend": name, "masked": masked, "status": f"unavailable: {str(e)[:160]}"})
        if self.args.attn == "auto":
            self.attn_backend = best[0] if best else "default"
        else:
            self.attn_backend = self.args.attn
        self.log({"kind": "attention_choice", "backend": self.attn_backend})
        del q, k, v, do
        self.cleanup()

    def _time(self, fn: Callable[[], Any], warmup: int, iters: int) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        if self.device.type == "cuda":
            evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
            for e0, e1 in evs:
                e0.record()
                fn()
                e1.record()
            torch.cuda.synchronize()
            return statistics.median(e0.elapsed_time(e1) / 1e3 for e0, e1 in evs)
        ts = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    # --- one configuration -------------------------------------------------------------
    def build(self, preset: str, mode: str, batch: int, opts: dict):
        """Model + step function of one configuration."""
        dev = self.device
        if mode == "ref":
            model = reference_model(preset).to(dev)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
            return TorchStep(model, opt, autocast=False, device=dev)
        torch.manual_seed(0)
        model = create_model(preset)
        if opts.get("channels_last"):
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    m.to(memory_format=torch.channels_last)
        if opts.get("compile"):
            compile_regions(model)
        if mode == "shipped":
            model.to(dev).train()
            opt = build_optimizer(model, 1e-4, 1e-4, (0.9, 0.999), 1e-8, fused=opts.get("fused", True))
            return TorchStep(model, opt, autocast=opts.get("bf16", True), device=dev)
        stage = {"zero2": 2, "zero3": 3}[mode]
        ckpt = bool(opts.get("ckpt")) and hasattr(model, "set_grad_checkpointing")
        if ckpt:
            model.set_grad_checkpointing(True)
        opts["ckpt_applied"] = ckpt
        ensure_dist(dev)
        model.to(dev).train()
        return DeepSpeedStep(model, batch, stage, ckpt, dev, aligned=bool(opts.get("aligned")),
                             mem_efficient_linear=opts.get("mel", True))

    def measure(self, preset: str, mode: str, batch: int, label: str = "", steps: int | None = None,
                warmup: int | None = None, profile: bool = False, **opts) -> dict:
        steps = steps or self.args.steps
        warmup = warmup if warmup is not None else self.args.warmup
        rec: dict[str, Any] = {"kind": "step", "preset": preset, "mode": mode, "label": label or mode, "batch": batch,
                               "attn_backend": self.active_attn,
                               **{k: v for k, v in opts.items() if k != "masked"}, "masked": bool(opts.get("masked"))}
        if mode not in self.args.modes.split(","):
            return rec
        if not self.time_left():
            rec["status"] = "skipped (time budget)"
            self.log(rec)
            return rec
        self.cleanup()
        if self.device.type == "cuda":
            rec["mem_before_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        step = None
        try:
            t_build = time.perf_counter()
            step = self.build(preset, mode, batch, opts)
            rec["ckpt"] = opts.get("ckpt_applied", False)
            if getattr(step, "notes", None):
                rec["notes"] = "; ".join(step.notes)
            b = make_batch(preset, batch, self.device, masked=bool(opts.get("masked")))
            t_first = time.perf_counter()
            step(b)
            self.sync()
            rec["first_step_s"] = round(time.perf_counter() - t_first, 2)
            rec["build_s"] = round(t_first - t_build, 2)
            losses = []
            dt = self._time(lambda: losses.append(step(b)), warmup=max(0, warmup - 1), iters=steps)
            loss = float(losses[-1])
            if not math.isfinite(loss):
                raise RuntimeError(f"non-finite loss {loss}")
            flops, _ = train_flops_per_step(preset, batch)
            rec.update(status="ok", step_ms=round(dt * 1e3, 2), samples_per_s=round(batch / dt, 2),
                       model_tflops=round(flops / dt / 1e12, 1), loss=round(loss, 4))
            if self.peak_tflops:
                rec["mfu"] = round(flops / dt / 1e12 / self.peak_tflops, 4)
            if self.datasheet_tflops:
                rec["mfu_datasheet"] = round(flops / dt / 1e12 / self.datasheet_tflops, 4)
            if self.device.type == "cuda":
                rec["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                rec["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
            if profile and self.time_left():
                rec["profile"] = self.profile(step, b, f"{preset}_{label or mode}_b{batch}")
        except torch.OutOfMemoryError as e:
            rec["status"] = "OOM"
            rec["error"] = str(e).split("\n")[0][:200]
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            rec["status"] = "error"
            rec["error"] = msg[:400]
            traceback.print_exc()
            if "out of memory" in msg.lower():
                rec["status"] = "OOM"
        finally:
            if step is not None:
                step.close()
            del step
            self.cleanup()
        self.log(rec)
        return rec

    def profile(self, step, b: dict, tag: str) -> dict:
        """Device time by kernel class over 2 profiled steps; top kernels to $OUT."""
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self.sync()
        t_wall = time.perf_counter()
        with profile(activities=acts) as prof:
            for _ in range(2):
                step(b)
            self.sync()
        wall_ms = (time.perf_counter() - t_wall) * 1e3 / 2
        kernels: dict[str, float] = {}
        for evt in prof.key_averages():
            t = getattr(evt, "self_device_time_total", None)
            if t is None:
                t = getattr(evt, "self_cuda_time_total", 0.0)
            if t and t > 0 and (self.device.type != "cuda" or str(getattr(evt, "device_type", "")).endswith("CUDA")):
                kernels[evt.key] = kernels.get(evt.key, 0.0) + t
        total = sum(kernels.values()) or 1.0
        classes: dict[str, float] = {}
        for name, t in kernels.items():
            c = classify_kernel(name)
            classes[c] = classes.get(c, 0.0) + t
        top = sorted(kernels.items(), key=lambda kv: -kv[1])[:25]
        cpu_ops = sorted(((e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()
                          if e.self_cpu_time_total > 0), key=lambda kv: -kv[1])[:15]
        if self.out:
            with open(self.out / "profiles.txt", "a") as f:
                f.write(f"\n=== {tag}: device time {total / 2e3:.2f} ms per step, wall {wall_ms:.2f} ms per step "
                        f"(profiled) ===\n")
                for c, t in sorted(classes.items(), key=lambda kv: -kv[1]):
                    f.write(f"  {c:34s} {t / 2e3:9.2f} ms  {100 * t / total:5.1f}%\n")
                f.write("  top kernels:\n")
                for name, t in top:
                    f.write(f"    {t / 2e3:9.2f} ms  {100 * t / total:5.1f}%  {name[:150]}\n")
                f.write("  top host ops by self CPU time (per step):\n")
                for name, t, n in cpu_ops:
                    f.write(f"    {t / 2e3:9.2f} ms  x{n // 2:<6d} {name[:120]}\n")
        return {c: round(100 * t / total, 1) for c, t in sorted(classes.items(), key=lambda kv: -kv[1])} | {
            "_device_ms_per_step": round(total / 2e3, 2), "_wall_ms_per_step": round(wall_ms, 2)}


def classify_kernel(name: str) -> str:
    n = name.lower()
    if "cudnn" in n and ("sdpa" in n or "fmha" in n or "attention" in n or "fort_native" in n):
        return "attention: cudnn"
    if "flash" in n:
        return "attention: flash"
    if "fmha" in n or "efficient_attention" in n or "mem_eff" in n or "attention_kernel" in n:
        return "attention: mem-efficient"
    if "softmax" in n:
        return "softmax (math attention?)"
    if "nccl" in n:
        return "nccl"
    if "adam" in n or "multi_tensor_apply" in n or "foreach" in n or "l2norm" in n:
        return "optimizer / clip (multi-tensor)"
    if "conv" in n or "implicit_gemm" in n or "dgrad" in n or "wgrad" in n:
        return "convolution"
    if "gemm" in n or "nvjet" in n or "xmma" in n or "cutlass" in n or "cublas" in n or "gemv" in n:
        return "matmul (cuBLAS/cuBLASLt)"
    if n.startswith("triton") or "triton_" in n:
        return "fused elementwise (Inductor)"
    if "layer_norm" in n or "layernorm" in n:
        return "layernorm (eager)"
    if "gelu" in n:
        return "gelu (eager)"
    if "memcpy" in n or "memset" in n or "copy" in n:
        return "copies"
    if "elementwise" in n or "vectorized" in n or "reduce" in n or "unrolled" in n:
        return "other elementwise / reductions (eager)"
    return "other"


# ------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------


def largest_batch(bench: Bench, preset: str, mode: str, probes: tuple[int, ...], multiple: int,
                  profile_first: bool = False, first: dict | None = None, **opts) -> None:
    """Peak memory at two batch sizes -> linear fit -> the largest batch under the card's memory,
    then confirm it with a timed run (10% smaller if that fails).

    Memory still held from earlier engines (DeepSpeed ZeRO-3 engines leave ~3 GiB each behind)
    is subtracted from each probe and from the room left, so the fit is the configuration's own.
    """
    recs = ([first] if first else []) + [
        bench.measure(preset, mode, b, label=f"{mode}-probe", steps=2, warmup=1, profile=profile_first and i == 0,
                      **opts) for i, b in enumerate(probes)]
    if any(r.get("status") != "ok" for r in recs) or bench.device.type != "cuda":
        return
    (b1, m1), (b2, m2) = [(r["batch"], r["peak_reserved_gib"] - r["mem_before_gib"]) for r in recs]
    per = (m2 - m1) / (b2 - b1)
    fixed = m1 - per * b1
    total = torch.cuda.mem_get_info()[1] / 2**30
    held = torch.cuda.memory_allocated() / 2**30
    cap = total - 1.5 - held  # CUDA context, NCCL buffers, fragmentation; memory leaked earlier
    guess = min(4096, int((cap - fixed) / per) // multiple * multiple)
    bench.log({"kind": "fit", "preset": preset, "mode": mode, "gib_per_sample": round(per, 4),
               "fixed_gib": round(fixed, 2), "device_gib": round(total, 2), "held_gib": round(held, 2),
               "predicted_max_batch": guess})
    for b in (guess, int(guess * 0.9) // multiple * multiple):
        r = bench.measure(preset, mode, b, label=f"{mode}-max", steps=3, warmup=1, **opts)
        if r.get("status") == "ok":
            return


def plan_sensorlm(bench: Bench, preset: str, smoke: bool) -> None:
    bs = (lambda *xs: [2] if smoke else list(xs))
    B0 = 2 if smoke else 64
    # (1) plain reference; TF32 on is the same module with torch's opt-in fast fp32 matmuls.
    for b in bs(16, 32, 48):
        bench.measure(preset, "ref", b, steps=4, warmup=1)
    # Ablation ladder at one batch size: what each change buys.
    bench.measure(preset, "shipped", B0, label="bf16 eager, foreach AdamW, default SDPA", fused=False, compile=False)
    bench.measure(preset, "shipped", B0, label="+ fused AdamW", fused=True, compile=False)
    with attention_priority(bench, bench.attn_backend):
        bench.measure(preset, "shipped", B0, label=f"+ SDPA backend {bench.attn_backend}", fused=True, compile=False,
                      profile=True)
        bench.measure(preset, "shipped", B0, label="+ regional compile", fused=True, compile=not smoke,
                          profile=True)
        # (2) sweep (batch B0 is the last rung above)
        for b in bs(32, 96, 128):
            bench.measure(preset, "shipped", b, fused=True, compile=not smoke)
        bench.measure(preset, "shipped", B0, label="shipped, masked (missing minutes)", fused=True,
                      compile=not smoke, masked=True, profile=True)
        # (3) ZeRO-2 with the trainer's groups, then with the scalars moved to the end of their group
        for b in bs(32, 64, 96, 128):
            bench.measure(preset, "zero2", b, compile=not smoke, profile=(b == B0))
        for b in bs(32, 64, 96):
            bench.measure(preset, "zero2", b, label="zero2 + aligned groups", compile=not smoke, aligned=True,
                          profile=(b == B0))
        # (4) ZeRO-3 + activation checkpointing, largest batch
        largest_batch(bench, preset, "zero3", (2, 4) if smoke else (128, 256), 1 if smoke else 16,
                      profile_first=True, ckpt=True, aligned=True)
    if not smoke:
        torch.backends.cuda.matmul.allow_tf32 = True
        bench.measure(preset, "ref", 32, label="ref + TF32 (opt-in)", steps=4, warmup=1)
        torch.backends.cuda.matmul.allow_tf32 = False


def plan_followup(bench: Bench, smoke: bool) -> None:
    """Second device call of 2026-11-23: what the first one left open (see bench/RESULTS.md)."""
    P, S = ("sensorlm_tiny", "sst_tiny") if smoke else ("sensorlm_vitb_10_2", "sst_base")
    with attention_priority(bench, "cudnn"):
        for b in (2,) if smoke else (64, 96):
            bench.measure(P, "zero2", b, label="zero2 + aligned groups", compile=not smoke, aligned=True,
                          profile=(b == 64 or smoke))
    # The first call's sst rows ran after ZeRO-3 had patched F.linear: one clean repeat to compare.
    bench.measure(S, "shipped", 2 if smoke else 128, label="shipped (clean F.linear)", compile=not smoke)
    # cuDNN attention failed on sst_base at batch >= 256 (month attention over B*256 sequences).
    with attention_priority(bench, "math"):
        bench.measure(S, "shipped", 2 if smoke else 256, label="bf16 eager, math SDPA", compile=False)
    with attention_priority(bench, "cudnn"):
        B = 2 if smoke else 128
        a = bench.measure(P, "zero3", B, label="zero3-probe", steps=2, warmup=1, profile=True, ckpt=True, aligned=True)
        b = bench.measure(P, "zero3", B, label="zero3-probe, memory_efficient_linear off", steps=2, warmup=1,
                          profile=True, ckpt=True, aligned=True, mel=False)
        mel = b.get("samples_per_s", 0) <= a.get("samples_per_s", 0)
        largest_batch(bench, P, "zero3", (4,) if smoke else (256,), 1 if smoke else 16, first=a if mel else b,
                      ckpt=True, aligned=True, mel=mel)
    with attention_priority(bench, "math"):
        largest_batch(bench, S, "zero3", (2, 4) if smoke else (64, 128), 1 if smoke else 32, ckpt=True)


def plan_sst(bench: Bench, preset: str, smoke: bool) -> None:
    bs = (lambda *xs: [2] if smoke else list(xs))
    B0 = 2 if smoke else 64
    for b in bs(32, 64):
        bench.measure(preset, "ref", b)
    e = bench.measure(preset, "shipped", B0, label="bf16 eager, fused AdamW", compile=False)
    c = bench.measure(preset, "shipped", B0, label="+ regional compile", compile=not smoke, profile=True)
    cl = bench.measure(preset, "shipped", B0, label="+ channels_last", compile=not smoke, channels_last=True)
    best = max((e, c, cl), key=lambda r: r.get("samples_per_s", 0))
    use_compile = best is not e and not smoke
    use_cl = best is cl
    for b in bs(32, 128):
        bench.measure(preset, "shipped", b, compile=use_compile, channels_last=use_cl)
    for b in bs(64, 128):  # DeepSpeed flattens parameters: no channels_last there
        bench.measure(preset, "zero2", b, compile=use_compile)
    # cuDNN attention fails at batch >= 256 (the month attention's B*256 sequences): math first.
    with attention_priority(bench, "math"):
        bench.measure(preset, "shipped", 2 if smoke else 256, label="shipped, math SDPA", compile=use_compile,
                      channels_last=use_cl)
        largest_batch(bench, preset, "zero3", (2, 4) if smoke else (64, 128), 1 if smoke else 32, ckpt=True)


@contextlib.contextmanager
def attention_priority(bench: Bench, backend: str):
    """Prefer one SDPA backend inside the block (the others stay as fallbacks)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {
        "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH],
        "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "math": [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION],
    }.get(backend)
    if order is None:
        yield
        return
    try:
        ctx = sdpa_kernel(order, set_priority=True)
    except TypeError:  # older torch: no priority, enable the list only
        ctx = sdpa_kernel(order)
    bench.active_attn = backend
    try:
        with ctx:
            yield
    finally:
        bench.active_attn = "default"


def machine_info(device: torch.device) -> dict:
    info = {"kind": "machine", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "host": platform.node()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sms=p.multi_processor_count, gpu_mem_gib=round(p.total_memory / 2**30, 2),
                    cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            import subprocess

            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
    with contextlib.suppress(Exception):
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    info["tf32_matmul_default"] = torch.backends.cuda.matmul.allow_tf32
    return info


def markdown_table(results: list[dict]) -> str:
    rows = ["| preset | mode | label | batch | samples/s | step ms | model TFLOP/s | MFU (measured peak) | "
            "MFU (datasheet) | peak alloc GiB | peak reserved GiB | status |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r.get("kind") != "step":
            continue
        pct = lambda x: "" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        rows.append(
            f"| {r['preset']} | {r['mode']} | {r['label']} | {r['batch']} | {r.get('samples_per_s', '')} | "
            f"{r.get('step_ms', '')} | {r.get('model_tflops', '')} | {pct(r.get('mfu'))} | {pct(r.get('mfu_datasheet'))} | "
            f"{r.get('peak_mem_gib', '')} | {r.get('peak_reserved_gib', '')} | {r.get('status')} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------
# Checks (CPU)
# ------------------------------------------------------------------------------------------


def check_flops() -> None:
    """Analytic forward FLOPs vs torch's FLOP counter on the meta device (batch 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    for preset in ("sensorlm_vitb_10_2", "sst_base", "sensorlm_tiny", "sst_tiny"):
        b = make_batch_meta(preset, 2)
        with torch.device("meta"):
            model = create_model(preset)
        model.train()
        counter = FlopCounterMode(display=False)
        with counter:  # the model's forward (its logits are the SigLIP logits)
            if "sensor" in b:
                model(b["sensor"], b["input_ids"], b["attention_mask"], b["missing"], validate=False)
            else:
                model(b["daily"], b["mask"], b["padded_days"], b["land"], b["month_of_year"])
        counted = counter.get_total_flops()
        analytic = train_flops_per_step(preset, 2)[0] / 3
        print(f"{preset:22s} analytic {analytic:.4e}  flop_counter {counted:.4e}  ratio {analytic / counted:.4f}")


def make_batch_meta(preset: str, batch: int) -> dict:
    b = make_batch(preset, batch, torch.device("cpu"))
    if "month_of_year" in b:
        b["month_of_year"] = None  # its range check reads values, which meta tensors do not have
    return {k: (v.to("meta") if torch.is_tensor(v) else v) for k, v in b.items()}


def check_reference() -> None:
    """The reference computes the same function as the model (fp32, CPU, tiny preset)."""
    for preset in ("sensorlm_tiny",):
        torch.manual_seed(0)
        model = create_model(preset).eval()
        ref = reference_model(preset).eval()
        b = make_batch(preset, 3, torch.device("cpu"), masked=True)
        with torch.no_grad():
            a = model(b["sensor"], b["input_ids"], b["attention_mask"], b["missing"])["logits"]
            r = ref(b["sensor"], b["input_ids"], b["attention_mask"], b["missing"])["logits"]
        err = float((a - r).norm() / a.norm())
        print(f"{preset}: reference vs model relative error {err:.2e}")
        assert err < 1e-5, err


# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="sensorlm_vitb_10_2,sst_base")
    p.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for step.jsonl, step_table.md, profiles.txt")
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps (the first compiles)")
    p.add_argument("--attn", default="auto", choices=["auto", "default", "flash", "cudnn"],
                   help="SDPA backend priority; auto = the faster of flash/cudnn in the microbenchmark")
    p.add_argument("--deadline-s", type=float, default=540.0, help="skip configurations started after this")
    p.add_argument("--modes", default="ref,shipped,zero2,zero3", help="comma-separated subset of modes to run")
    p.add_argument("--smoke", action="store_true", help="CPU run of every code path on tiny presets")
    p.add_argument("--plan", default="full", choices=["full", "followup"],
                   help="full = the whole benchmark; followup = the second call's open questions only")
    p.add_argument("--check-flops", action="store_true", help="compare the FLOP formulas with torch's counter")
    args = p.parse_args(argv)

    if args.check_flops:
        check_flops()
        check_reference()
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    presets = ["sensorlm_tiny", "sst_tiny"] if args.smoke else args.presets.split(",")
    if args.smoke:
        args.steps, args.warmup = 2, 1
    for name in ("recompile_limit", "cache_size_limit"):  # one graph per (tower, mask, dtype)
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    bench = Bench(args, device)
    bench.log(machine_info(device))
    bench.measure_peak()
    if args.plan == "followup":
        plan_followup(bench, args.smoke)
        presets = []
    else:
        bench.attention_microbench()
    for preset in presets:
        cfg = model_config(preset)
        flops, parts = train_flops_per_step(preset, 1)
        bench.log({"kind": "flops", "preset": preset, "train_flops_per_sample": flops,
                   "forward_per_sample": parts})
        (plan_sensorlm if isinstance(cfg, SensorLMConfig) else plan_sst)(bench, preset, args.smoke)
    table = markdown_table(bench.results)
    if bench.out:
        (bench.out / "step_table.md").write_text(table + "\n")
    print(table)
    print(f"total {bench.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
