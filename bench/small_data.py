"""Which training defaults suit a small dataset: the README's job on one generated device export
(by default 3 subjects x 5 days at 30-s epochs, 2-hour windows: a few hundred windows, 4 labels), with and
without augmentation (crops in time, channel dropout) and weight decay, over seeds.

    python bench/small_data.py [--seeds 0 1] [--steps 300] [--subjects 3 --days 5 | --synthetic tiny] [--out DIR]

Prints one line per run: held-out zero-shot accuracy and validation loss at every validation, the
best of each, and the majority-class share. Results go in bench/RESULTS.md ("Learning: small data").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

CONDITIONS = {
    "as shipped": [],
    "crop 0.75 + channel dropout 0.1": ["data.augment.crop_min_fraction=0.75", "data.augment.channel_dropout=0.1"],
    "weight decay 0.05": ["optim.weight_decay=0.05"],
    "both": ["data.augment.crop_min_fraction=0.75", "data.augment.channel_dropout=0.1", "optim.weight_decay=0.05"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--synthetic", metavar="PRESET",
                   help="train on the synthetic wearable preset instead (e.g. tiny: 96 training days, 10 activities)")
    p.add_argument("--out", default="/tmp/small_data")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from mlflow.tracking import MlflowClient

    from sensorlm.cli import main as sensorlm_main
    from sensorlm.data.synthetic.device import write_device_export
    from sensorlm.training.config import load_train_config
    from sensorlm.training.trainer import train

    out = Path(args.out)
    data = out / "data"
    if args.synthetic:
        from sensorlm.data.prepare import prepare_synthetic

        if not (data / "manifest.json").is_file():
            prepare_synthetic("wearable", args.synthetic, data, seed=0, log=None)
        splits = {s: e["num_samples"] for s, e in json.loads((data / "manifest.json").read_text())["splits"].items()}
        print(f"# {data}: synthetic {args.synthetic}, {splits} windows", flush=True)
    elif not (data / "manifest.json").is_file():
        raw = write_device_export(out / "raw", subjects=args.subjects, days=args.days)
        code = sensorlm_main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--labels", str(raw["labels"]),
                              "--out", str(data), "--window-minutes", "120", "--stride-minutes", "60",
                              "--main-label-min-fraction", "0.5", "--prompt-template", "Two hours of {label}.",
                              "--quiet"])
        if code:
            return code
    if not args.synthetic:
        report = json.loads((data / "import_report.json").read_text())
        print(f"# {data}: {report['splits']} windows, labels {report['label_counts']}", flush=True)
    db = f"sqlite:///{out / 'mlflow.db'}"
    for name in args.conditions:
        for seed in args.seeds:
            run = f"small-{name.replace(' ', '_').replace('+', '')}-s{seed}-{int(time.time())}"
            cfg = load_train_config(str(root / "configs" / "sensorlm_tiny.yaml"), [
                f"data.path={data}", "data.synthetic=null", f"seed={seed}", f"steps={args.steps}", "eval_every=50",
                "checkpoint.every_steps=50", f"storage_path={out / 'ray'}", f"tracking.tracking_uri={db}",
                "tracking.system_metrics=false", "tracking.register=false", f"name={run}", *CONDITIONS[name]])
            result = train(cfg)
            client = MlflowClient(db)
            hist = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(result.run_id, k), key=lambda m: m.step)]
                    for k in ("val/zero_shot_acc", "val/loss")}
            acc, loss = hist["val/zero_shot_acc"], hist["val/loss"]
            majority = result.metrics.get("val/majority_share", float("nan"))
            print(f"RESULT | {name} | seed {seed} | acc " + " ".join(f"{v:.2f}" for _, v in acc)
                  + f" | best acc {max(v for _, v in acc):.2f} at {max(acc, key=lambda sv: sv[1])[0]}"
                  + " | loss " + " ".join(f"{v:.2f}" for _, v in loss)
                  + f" | best loss {min(v for _, v in loss):.2f} at {min(loss, key=lambda sv: sv[1])[0]}"
                  + f" | final acc {acc[-1][1]:.2f} loss {loss[-1][1]:.2f} | majority {majority:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
