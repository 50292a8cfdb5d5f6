"""Train ProjectionCL: `python jobs/train_projection.py --config configs/projection_cl_tiny.yaml [key=value ...]`.

Also runs as `ray job submit --working-dir . -- python jobs/train_projection.py ...`.
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--task", "projection_cl", "--config", "projection_cl_tiny", *sys.argv[1:]], prog="jobs/train_projection.py"))
