"""Sweep ProjectionCL's logit-scale bounds and learning rate on two paired embedding sets.

``python tune/sweep_projection.py --config configs/sweeps/projection_tiny.yaml [key=value ...]``

Embeddings from a trained SensorLM first (sensor vs caption embeddings of the same days):
``python tune/sweep_projection.py export --model models:/sensorlm@champion --dataset DIR --out DIR``
See docs/sweeps.md.
"""

import argparse
import sys

from sensorlm.tuning.sweep import main


def export(argv: list[str]) -> int:
    from sensorlm.tuning.projection import export_sensorlm_embeddings

    parser = argparse.ArgumentParser(prog="sweep_projection.py export", description="Export SensorLM embeddings.")
    parser.add_argument("--model", required=True, help="a model package directory or an MLflow model URI")
    parser.add_argument("--dataset", required=True, help="dataset directory (shards + manifest + tokenizer)")
    parser.add_argument("--out", required=True, help="output folder for {split}_sensor.npy / {split}_text.npy")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    paths = export_sensorlm_embeddings(args.model, args.dataset, args.out, tracking_uri=args.tracking_uri)
    for key, path in paths.items():
        print(f"{key}: {path}")
    print("sweep them with: python tune/sweep_projection.py --config configs/sweeps/projection_sensorlm.yaml "
          f"base.data.train_a={paths['train_sensor']} base.data.train_b={paths['train_text']} "
          f"base.data.val_a={paths['val_sensor']} base.data.val_b={paths['val_text']}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        sys.exit(export(sys.argv[2:]))
    sys.exit(main(default_config="projection_tiny", task="projection_cl"))
