"""Sweep ProjectionCL's logit scale, its bounds and the learning rate on paired embeddings.

``python tune/sweep_projection.py --config configs/sweeps/projection_tiny.yaml [key=value ...]``

Pairs from a trained SensorLM first (sensor vs caption embeddings of the same days):
``python tune/sweep_projection.py export --model models:/sensorlm@champion --dataset DIR --out DIR``
See docs/sweeps.md.
"""

import argparse
import sys

from sensorlm.tuning.sweep import main


def export(argv: list[str]) -> int:
    from sensorlm.data.embedding_pairs import export_sensorlm_pairs
    from sensorlm.evaluation.evaluate import resolve_model
    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    parser = argparse.ArgumentParser(prog="sweep_projection.py export",
                                     description="Write a SensorLM's sensor and caption embeddings as a paired dataset.")
    parser.add_argument("--model", required=True, help="a model package directory or an MLflow model URI")
    parser.add_argument("--dataset", required=True, help="wearable dataset directory (shards + manifest + tokenizer)")
    parser.add_argument("--out", required=True, help="the new paired-embedding folder")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    package = resolve_model(args.model, resolve_tracking_uri(args.tracking_uri)).package
    out = export_sensorlm_pairs(package, args.dataset, args.out)
    print(f"wrote {out}")
    print(f"sweep it with: python tune/sweep_projection.py --config configs/sweeps/projection_sensorlm.yaml "
          f"base.data.path={out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        sys.exit(export(sys.argv[2:]))
    sys.exit(main(default_config="projection_tiny", task="projection_cl"))
