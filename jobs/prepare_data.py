"""Build a dataset: `python jobs/prepare_data.py wearable|sst --size tiny --out DIR [--parquet FILE ...]`.

Without ``--parquet`` the project's synthetic data is generated first (as Parquet in DIR/parquet/).
Same as ``sensorlm prepare-data ...``; see `sensorlm.cli` for all options.
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare-data", *sys.argv[1:]], prog="jobs/prepare_data.py"))
