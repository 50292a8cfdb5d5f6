"""sensorlm/training/distributed.py: the helpers work without a process group and across two gloo ranks."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sensorlm.training.distributed import all_gather_json, all_gather_rows, all_reduce_sum, is_main, rank, world_size


def test_single_process_defaults():
    assert not dist.is_initialized()
    assert (rank(), world_size(), is_main()) == (0, 1, True)
    assert all_gather_json({"shards": ["a.tar"], "n": 1}) == [{"shards": ["a.tar"], "n": 1}]
    assert all_reduce_sum(torch.tensor([2.0])).item() == 2.0
    rows = torch.arange(6.0).reshape(3, 2)
    gathered, offset = all_gather_rows(rows)
    assert torch.equal(gathered, rows) and offset == 0


def _gather_worker(r: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=2)
    try:
        # Different lengths per rank: the helper pads to the longest and trims back.
        mine = {"rank": r, "shards": [f"train-{i:06d}.tar" for i in range(r * 3 + 1)], "note": "é" * r}
        gathered = all_gather_json(mine)
        # rows: 1 on rank 0, 3 on rank 1 (row i of rank r holds r*10 + i), in rank order
        rows, offset = all_gather_rows(torch.tensor([[r * 10.0 + i, -1.0] for i in range(1 + 2 * r)]))
        if r == 0:
            with open(out_file, "w") as f:
                json.dump(gathered, f)
        with open(f"{out_file}.rows{r}", "w") as f:
            json.dump({"rows": rows.tolist(), "offset": offset}, f)
    finally:
        dist.destroy_process_group()


def test_all_gather_json_across_two_gloo_ranks(tmp_path):
    out = tmp_path / "gathered.json"
    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    gathered = json.loads(out.read_text())
    assert [g["rank"] for g in gathered] == [0, 1]
    assert gathered[0]["shards"] == ["train-000000.tar"]
    assert gathered[1]["shards"] == [f"train-{i:06d}.tar" for i in range(4)]
    assert gathered[1]["note"] == "é"
    for r, offset in ((0, 0), (1, 1)):
        rows = json.loads(out.with_name(f"gathered.json.rows{r}").read_text())
        assert rows == {"rows": [[0.0, -1.0], [10.0, -1.0], [11.0, -1.0], [12.0, -1.0]], "offset": offset}
