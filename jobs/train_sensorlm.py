"""Train SensorLM: `python jobs/train_sensorlm.py --config configs/sensorlm_tiny.yaml [key=value ...]`.

Also runs as `ray job submit --working-dir . -- python jobs/train_sensorlm.py ...`.
"""

import sys

from sensorlm.training.cli import main

if __name__ == "__main__":
    sys.exit(main(default_config="sensorlm_tiny", task="sensorlm"))
