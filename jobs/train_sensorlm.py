"""Train SensorLM: `python jobs/train_sensorlm.py --config configs/sensorlm_tiny.yaml [key=value ...]`.

Also runs as `ray job submit --working-dir . -- python jobs/train_sensorlm.py ...`.
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--task", "sensorlm", "--config", "sensorlm_tiny", *sys.argv[1:]], prog="jobs/train_sensorlm.py"))
