"""The CoCa family's combined loss under DeepSpeed ZeRO-2 and ZeRO-3 on two gloo ranks: each rank
trains on half of a batch, and the gradients DeepSpeed hands the optimizer equal those of one
process on the whole batch (the SigLIP part is exchanged exactly; the caption part is each rank's
token mean, averaged over the ranks, which is the whole batch's mean at equal caption lengths)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

PARAMS = ("t_prime", "bias", "text_encoder.token_embed.weight", "decoder.0.cross.q.weight",
          "decoder.1.mlp.fc2.weight", "sensor_encoder.patch_embed.weight", "sensor_to_text.weight")
B, L = 8, 12


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 1024, (B, L), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    return {"sensor": torch.randn(B, 144, 34, generator=g), "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _task():
    from sensorlm.training.tasks import CoCaTask

    return CoCaTask([], [], None, L, torch.device("cpu"), caption_loss_weight=2.0)


def _worker(rank, world, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    from sensorlm.models import create_model
    from sensorlm.training.engine import _skip_inference_comm_op

    _skip_inference_comm_op()
    deepspeed.init_distributed(dist_backend="gloo")
    torch.set_num_threads(1)
    half = {k: v[rank * B // world:(rank + 1) * B // world] for k, v in _batch().items()}
    grads = {}
    for stage in (2, 3):
        torch.manual_seed(0)
        model = create_model("sensorlm_coca_tiny")
        config = {"train_micro_batch_size_per_gpu": B // world, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": stage}, "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "torch_adam": True}}}
        engine, *_ = deepspeed.initialize(model=model, config=config, dist_init_required=False)
        loss, _ = _task().loss(engine, half)
        engine.backward(loss)
        named = dict(engine.module.named_parameters())
        grads[stage] = {name: safe_get_full_grad(named[name]).clone() for name in PARAMS}
        engine.destroy()
    if rank == 0:
        torch.save(grads, out_dir / "grads.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)  # gloo's teardown can hang a spawned child


@pytest.mark.timeout(600)
def test_zero2_and_zero3_gradients_of_the_combined_loss_match_one_process(tmp_path):
    from sensorlm.models import create_model

    mp.start_processes(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True, start_method="spawn")
    torch.manual_seed(0)
    model = create_model("sensorlm_coca_tiny")
    loss, _ = _task().loss(model, _batch())
    loss.backward()
    named = dict(model.named_parameters())
    distributed = torch.load(tmp_path / "grads.pt", weights_only=True)
    for stage, grads in distributed.items():
        for name in PARAMS:
            assert named[name].grad.abs().sum() > 0, name  # every part of the model takes part
            torch.testing.assert_close(grads[name], named[name].grad, rtol=2e-4, atol=2e-6,
                                       msg=lambda m: f"ZeRO-{stage} {name}: {m}")
