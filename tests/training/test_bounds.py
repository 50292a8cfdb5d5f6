"""Bounded scale parameters under DeepSpeed (sensorlm/training/bounds.py): a logit scale that
starts above its max comes back inside after the first step and keeps training at the bound,
under ZeRO 1, 2 and 3, on two gloo ranks (the fp32 master copy is clamped as well as the module's)."""

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

MAX, MIN = 5.0, 1.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

    from sensorlm.losses import clip_loss_distributed
    from sensorlm.models import create_model
    from sensorlm.training.bounds import clamp_bounded_parameters

    from sensorlm.training.engine import _skip_inference_comm_op

    _skip_inference_comm_op()  # as the trainer does: training never uses DeepSpeed's shm inference op
    deepspeed.init_distributed(dist_backend="gloo")
    torch.set_num_threads(1)
    record = {}
    for stage in (1, 2, 3):
        torch.manual_seed(0)
        model = create_model("projection_cl_tiny", logit_scale_init=50.0, max_logit_scale=MAX, min_logit_scale=MIN)
        config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": stage}, "optimizer": {"type": "AdamW", "params": {"lr": 0.05, "torch_adam": True}}}
        engine, *_ = deepspeed.initialize(model=model, config=config, dist_init_required=False)
        bounds = engine.module.parameter_bounds()
        g = torch.Generator().manual_seed(rank)
        seen = []
        for _ in range(4):
            a, b = torch.randn(8, 64, generator=g), torch.randn(8, 48, generator=g)
            out = engine(a, b, return_embeddings=True)
            loss = clip_loss_distributed(out["emb_a"], out["emb_b"], out["logit_scale"])
            engine.backward(loss)
            grad = safe_get_full_grad(engine.module.logit_scale)  # before the step: what the optimizer gets
            engine.step()
            clamp_bounded_parameters(engine, bounds)
            param = engine.module.logit_scale
            with deepspeed.zero.GatheredParameters([param], enabled=stage == 3):
                module_value = float(param.data.exp().item())
            master = safe_get_full_fp32_param(param)
            seen.append({"module": module_value, "master": float(master.exp().item()),
                         "grad": float(grad.abs().sum().item())})
        record[stage] = {"steps": seen}
        engine.destroy()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)  # gloo's teardown can hang a spawned child


@pytest.mark.timeout(600)
def test_scale_above_its_max_is_clamped_back_under_zero_1_2_3(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True, start_method="spawn")
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for stage in ("1", "2", "3"):
            for step in record[stage]["steps"]:
                assert MIN - 1e-4 <= step["module"] <= MAX + 1e-4, (stage, step)
                assert step["master"] == pytest.approx(step["module"], rel=1e-5), (stage, step)
            # at the bound (every step after the first) the scale still gets a gradient: it can move
            # back inside, which a functional clamp (gradient exactly 0) would never allow
            assert all(step["grad"] > 0 and math.isfinite(step["grad"]) for step in record[stage]["steps"][1:])
