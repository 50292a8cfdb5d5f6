"""Train the SST model: `python jobs/train_sst.py --config configs/sst_tiny.yaml [key=value ...]`."""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--task", "sst", "--config", "sst_tiny", *sys.argv[1:]], prog="jobs/train_sst.py"))
