"""Evaluate a registered model: `python jobs/evaluate.py models:/sensorlm@champion [--data DIR] [...]`.

Metrics go to an MLflow run in the ``<name>-evaluation`` experiment (linked to the model version
by tags) and are printed as a table; plots go to MLflow and to ``outputs/eval/<name>-v<version>``.
See docs/evaluation.md.
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]], prog="jobs/evaluate.py"))
