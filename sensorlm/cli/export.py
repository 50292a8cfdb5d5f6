"""``sensorlm export MODEL --dataset DIR --out DIR``: a SensorLM's sensor and caption embeddings ->
the paired dataset ProjectionCL trains on (also `tune/sweep_projection.py export`)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a SensorLM: models:/NAME/VERSION, models:/NAME@ALIAS or a package directory")
    p.add_argument("--dataset", required=True, help="wearable dataset directory (shards + manifest + tokenizer)")
    p.add_argument("--out", required=True, help="the new paired-embedding folder (what ProjectionCL trains on)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")


def run(args: argparse.Namespace) -> int:
    from sensorlm.data.embedding_pairs import export_sensorlm_pairs
    from sensorlm.tracking.resolve import resolve_model
    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    package = resolve_model(args.model, resolve_tracking_uri(args.tracking_uri)).package
    out = export_sensorlm_pairs(package, args.dataset, args.out)
    print(f"[export] wrote {out}; train ProjectionCL on it: sensorlm train --config projection_cl_tiny "
          f"data.path={out} data.synthetic=null", flush=True)
    return 0
