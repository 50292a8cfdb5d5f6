#!/usr/bin/env bash
# Stop the Ray head and the MLflow server recorded in the state dir (only what servers.py started;
# never `ray stop`, which would kill every Ray process of this user on the machine).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "${SERVERS[@]}" stop all "$@"
