"""``sensorlm evaluate MODEL [key=value ...] [--data DIR] ...`` (also `jobs/evaluate.py`): the family's metrics
as a table, plots to MLflow and to a local folder (docs/evaluation.md)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", help="the model: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, "
                        "a run id, or a local model package directory")
    parser.add_argument("overrides", nargs="*", help="key=value options of the evaluation config "
                        "(sensorlm.evaluation.config.EvalConfig), e.g. batch_size=128 shots=[1,5]")
    parser.add_argument("--config", help="a YAML file of evaluation options")
    parser.add_argument("--dry-run", action="store_true", help="resolve the model and options, print them, exit")
    parser.add_argument("--data", help="dataset directory or URL (default: the training run's data.path)")
    parser.add_argument("--split", help="split to evaluate (default val)")
    parser.add_argument("--fold", help="k/K: a k-fold dataset as fold k sees it (default: the training run's data.fold)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", help="experiment of the evaluation run (default NAME-evaluation)")
    parser.add_argument("--out", help="local output folder (default outputs/eval/NAME-vVERSION)")
    parser.add_argument("--compare", nargs="*", metavar="RUN",
                        help="runs for the ablation plot: run ids, run names or tag:KEY=VALUE")
    parser.add_argument("--rollout-samples", type=int, help="attention-rollout figures (ViT tower; default 2)")
    parser.add_argument("--map-samples", type=int, help="SST map figures (default 2)")
    parser.add_argument("--batch-size", type=int, help="default 64")
    parser.add_argument("--max-samples", type=int, help="evaluate at most this many samples")
    parser.add_argument("--max-train", type=int, help="train samples for the few-shot probe (default 2000)")
    parser.add_argument("--shots", type=int, nargs="*", help="few-shot probe shots per class (default 1 5 10)")
    parser.add_argument("--embeddings-a", help="ProjectionCL: .npy features of modality A (N, dim_a)")
    parser.add_argument("--embeddings-b", help="ProjectionCL: .npy features of modality B (N, dim_b), paired rows")
    parser.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--no-log", action="store_true", help="write local files only; no MLflow run or tags")


def run(args: argparse.Namespace) -> int:
    """``sensorlm evaluate MODEL_URI [key=value ...] [--data DIR] ...``: prints the metrics table."""
    import yaml

    from sensorlm.typed_config import redact, to_dict
    from sensorlm.evaluation.config import load_eval_config
    from sensorlm.evaluation.evaluate import evaluate_with, format_metrics_table

    cfg = load_eval_config(
        args.config, args.overrides, data=args.data, split=args.split, fold=args.fold, tracking_uri=args.tracking_uri,
        experiment=args.experiment, out_dir=args.out, compare=args.compare, rollout_samples=args.rollout_samples,
        map_samples=args.map_samples, log=False if args.no_log else None, batch_size=args.batch_size,
        max_samples=args.max_samples, max_train=args.max_train, shots=args.shots, embeddings_a=args.embeddings_a,
        embeddings_b=args.embeddings_b, device=args.device,
    )
    if args.dry_run:
        from sensorlm.tracking.mlflow_utils import resolve_tracking_uri
        from sensorlm.tracking.resolve import resolve_model

        resolved = resolve_model(args.model_uri, resolve_tracking_uri(cfg.tracking_uri))
        version = f" version {resolved.version}" if resolved.version else ""
        print(f"# {args.model_uri}: {resolved.package.family} model {resolved.package.preset!r}{version}")
        print(yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False))
        return 0
    # One progress bar per downloaded file would drown the table in a terminal log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = evaluate_with(args.model_uri, cfg)
    print()
    print(format_metrics_table(result.metrics, result.family))
    print()
    for name, path in result.plots.items():
        print(f"plot {name}: {path}")
    if result.run_id:
        print(f"MLflow evaluation run {result.run_id}")
    return 0
