"""Train ProjectionCL: `python jobs/train_projection.py --config configs/projection_cl_tiny.yaml [key=value ...]`.

Also runs as `ray job submit --working-dir . -- python jobs/train_projection.py ...`.
"""

import sys

from sensorlm.training.cli import main

if __name__ == "__main__":
    sys.exit(main(default_config="projection_cl_tiny", task="projection_cl"))
