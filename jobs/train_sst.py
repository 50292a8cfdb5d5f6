"""Train the SST model: `python jobs/train_sst.py --config configs/sst_tiny.yaml [key=value ...]`."""

import sys

from sensorlm.training.cli import main

if __name__ == "__main__":
    sys.exit(main(default_config="sst_tiny", task="sst"))
