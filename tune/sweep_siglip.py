"""Sweep SensorLM's SigLIP temperature / bias and the learning rate.

``python tune/sweep_siglip.py --config configs/sweeps/siglip_tiny.yaml [key=value ...]``
(rerun the same command to resume an interrupted sweep). See docs/sweeps.md.
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", "--task", "sensorlm", "--config", "siglip_tiny", *sys.argv[1:]], prog="tune/sweep_siglip.py"))
