"""Sweep ProjectionCL's logit scale, its bounds and the learning rate on paired embeddings.

``python tune/sweep_projection.py --config configs/sweeps/projection_tiny.yaml [key=value ...]``

Pairs from a trained SensorLM first (sensor vs caption embeddings of the same days):
``python tune/sweep_projection.py export --model models:/sensorlm@champion --dataset DIR --out DIR``
See docs/sweeps.md.
"""

import sys

from sensorlm.cli import main


def export(argv: list[str]) -> int:
    """``sensorlm export``, which this script's ``export`` is; ``--model M`` is its positional M."""
    if "--model" in argv:
        i = argv.index("--model")
        argv = [*argv[i + 1 : i + 2], *argv[:i], *argv[i + 2 :]]
    return main(["export", *argv], prog="tune/sweep_projection.py")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        sys.exit(export(sys.argv[2:]))
    sys.exit(main(["sweep", "--task", "projection_cl", "--config", "projection_tiny", *sys.argv[1:]],
                  prog="tune/sweep_projection.py"))
