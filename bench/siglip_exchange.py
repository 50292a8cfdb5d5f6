"""Per-rank peak memory and step time of the distributed SigLIP forms: `gather` against `ring`.

    python bench/siglip_exchange.py                                # 2, 4, 8 gloo ranks, B = D = 256
    python bench/siglip_exchange.py --ranks 2 4 --batch 128 --steps 3

One step = forward and backward of `siglip_loss_distributed(..., exchange=...)` over fixed random
inputs through a tiny model (one D x D linear per tower, then L2 normalisation), on W spawned CPU
processes (gloo, one thread each). Every (form, W) runs in its own fresh processes. Per rank:

- tensor peak: the highest total of tensor bytes allocated during one step and not yet freed, from
  the allocation events of `torch.profiler` (`profile_memory=True`); tensors alive before the step
  (inputs, weights) are not counted, autograd's saved tensors and the receive buffers are.
- RSS peak: the process's resident high-water mark (VmHWM, reset through /proc/self/clear_refs)
  during the first full-size step, minus the resident size just before it. Includes allocator
  slack and gloo's own buffers; the allocator may reuse pages freed earlier, so it can read low.
- step ms: the median over the timed steps, each started after a barrier. W processes share the
  machine's cores, so times compare forms at the same W, not across W.

The table reports the maximum over ranks. The analytic column counts the float32 logit-sized
matrices per rank: (W*B)^2 for gather, B^2 for ring, 4 bytes each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorlm.losses import SIGLIP_EXCHANGES, siglip_loss_distributed  # noqa: E402

MiB = 2**20


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _tensor_peak(prof) -> int:
    """Highest running total of tensor bytes allocated (minus freed) in a profiled region."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    total = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        total += e.nbytes()
        peak = max(peak, total)
    return peak


class _Towers(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        torch.manual_seed(0)
        self.sensor = torch.nn.Linear(dim, dim)
        self.text = torch.nn.Linear(dim, dim)
        self.t_prime = torch.nn.Parameter(torch.tensor([2.3]))
        self.bias = torch.nn.Parameter(torch.tensor([-10.0]))

    def clear(self) -> None:
        for p in self.parameters():
            p.grad = None

    def step(self, xs: torch.Tensor, xt: torch.Tensor, exchange: str) -> torch.Tensor:
        self.clear()
        zs = torch.nn.functional.normalize(self.sensor(xs), dim=-1)
        zt = torch.nn.functional.normalize(self.text(xt), dim=-1)
        loss = siglip_loss_distributed(zs, zt, self.t_prime, self.bias, exchange=exchange)
        loss.backward()
        return loss.detach()


def _worker(rank: int, world: int, port: int, exchange: str, batch: int, dim: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = _Towers(dim)
        g = torch.Generator().manual_seed(100 + rank)
        xs, xt = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
        model.step(xs[:2], xt[:2], exchange)  # connections, autograd and kernels warmed on a tiny batch
        dist.barrier()

        model.clear()
        before = _status_kib("VmRSS")
        exact = _reset_rss_peak()
        loss = model.step(xs, xt, exchange)
        rss_peak = (_status_kib("VmHWM") - before) * 1024 if exact else None

        times = []
        for _ in range(steps):
            dist.barrier()
            t0 = time.perf_counter()
            model.step(xs, xt, exchange)
            times.append(time.perf_counter() - t0)

        model.clear()  # frees of blocks from before the profiler are not seen by it
        dist.barrier()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            model.step(xs, xt, exchange)
        result = {
            "exchange": exchange, "world": world, "rank": rank, "batch": batch, "dim": dim,
            "loss": loss.item(), "tensor_peak_bytes": _tensor_peak(prof), "rss_peak_bytes": rss_peak,
            "step_s": statistics.median(times),
        }
        Path(out, f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
    os._exit(0)  # gloo's teardown at interpreter exit aborts now and then (see tests/test_losses.py)


def measure(exchange: str, world: int, batch: int, dim: int, steps: int) -> dict:
    """One (form, world size) in fresh processes; the maximum over ranks of each measure."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, _free_port(), exchange, batch, dim, steps, tmp), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(world)]
    rss = [r["rss_peak_bytes"] for r in ranks]
    return {
        "exchange": exchange, "world": world, "batch": batch, "dim": dim, "global_batch": world * batch,
        "loss": ranks[0]["loss"], "loss_spread": max(r["loss"] for r in ranks) - min(r["loss"] for r in ranks),
        "tensor_peak_bytes": max(r["tensor_peak_bytes"] for r in ranks),
        "rss_peak_bytes": None if None in rss else max(rss),
        "step_s": max(r["step_s"] for r in ranks),
        "logit_matrix_bytes": 4 * (world * batch if exchange == "gather" else batch) ** 2,
    }


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(rows: list[dict]) -> str:
    lines = [
        "| form | ranks W | global N | tensor peak MiB | RSS peak MiB | one logit matrix MiB | peak / logit matrix "
        "| step ms | loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = "n/a" if r["rss_peak_bytes"] is None else f"{r['rss_peak_bytes'] / MiB:.1f}"
        lines.append(
            f"| {r['exchange']} | {r['world']} | {r['global_batch']} | {r['tensor_peak_bytes'] / MiB:.1f} | {rss} "
            f"| {r['logit_matrix_bytes'] / MiB:.2f} | {r['tensor_peak_bytes'] / r['logit_matrix_bytes']:.1f} "
            f"| {1000 * r['step_s']:.0f} | {r['loss']:.6f} |"
        )
    return "\n".join(lines)


def extrapolate(rows: list[dict], world: int) -> list[str]:
    """Per-rank tensor peak at `world` ranks, fitted on the two largest W measured: gather as
    a * N^2 + c (N = W * B), ring as a + s * W (flat if s ~ 0)."""
    out = []
    for exchange in sorted({r["exchange"] for r in rows}):
        runs = sorted((r for r in rows if r["exchange"] == exchange), key=lambda r: r["world"])[-2:]
        if len(runs) < 2:
            continue
        (w1, p1), (w2, p2) = [(r["world"], r["tensor_peak_bytes"]) for r in runs]
        b = runs[-1]["batch"]
        if exchange == "gather":
            a = (p2 - p1) / ((w2 * b) ** 2 - (w1 * b) ** 2)
            c = p1 - a * (w1 * b) ** 2
            peak = a * (world * b) ** 2 + c
            fit = f"{a / 4:.2f} x 4 B x N^2 + {c / MiB:.1f} MiB"
        else:
            s = (p2 - p1) / (w2 - w1)
            peak = p2 + s * (world - w2)
            fit = f"{p2 / MiB:.1f} MiB at W={w2} + {s / MiB:.3f} MiB per rank added"
        out.append(f"{exchange}: {fit} -> {peak / 2**30:.3f} GiB per rank at W={world}, B={b} "
                   f"(fitted on W={w1}, {w2})")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--exchanges", nargs="+", default=sorted(SIGLIP_EXCHANGES), choices=sorted(SIGLIP_EXCHANGES))
    p.add_argument("--batch", type=int, default=256, help="local batch per rank")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    p.add_argument("--extrapolate", type=int, default=256, help="ranks to extrapolate the peak to")
    p.add_argument("--out", type=Path, help="JSONL file for the machine and the rows")
    args = p.parse_args(argv)

    info = machine()
    print(f"machine: {info}", flush=True)
    rows = []
    for world in args.ranks:
        for exchange in args.exchanges:
            row = measure(exchange, world, args.batch, args.dim, args.steps)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps({"machine": info}) + "\n")
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(table(rows))
    for line in extrapolate(rows, args.extrapolate):
        print(line)


if __name__ == "__main__":
    main()
