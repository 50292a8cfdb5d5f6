#!/usr/bin/env bash
# Health of the local servers as JSON; exits 0 only when every one asked for is healthy.
# Usage: healthcheck.sh [ray|mlflow|all]   (default all)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "${SERVERS[@]}" status "${1:-all}"
