"""Promote a registered version: `python jobs/promote.py sensorlm 7 [--alias champion]`.

Run with the promoter's MLflow login in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (jobs'
logins may register versions but not move aliases). See docs/cluster.md, "Promotion".
"""
import sys

from sensorlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]], prog="jobs/promote.py"))
