"""Embed with a registered model: `python jobs/embed.py models:/sensorlm@champion --dataset DIR --out DIR [...]`.

The same as `sensorlm embed` (see docs/embed.md), for `ray job submit -- python jobs/embed.py ...`.
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]], prog="jobs/embed.py"))
