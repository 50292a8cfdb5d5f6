#!/usr/bin/env bash
# Start a local MLflow tracking server (127.0.0.1, sqlite store unless --backend-store-uri or
# $SENSORLM_MLFLOW_BACKEND_STORE_URI names PostgreSQL, artifacts served by the server).
# --auth: basic auth, admin from $SENSORLM_MLFLOW_ADMIN_USER / $SENSORLM_MLFLOW_ADMIN_PASSWORD.
# Then:  eval "$(python infra/local/servers.py env mlflow)"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "${SERVERS[@]}" start mlflow "$@"
