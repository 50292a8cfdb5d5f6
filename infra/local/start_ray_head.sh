#!/usr/bin/env bash
# Start a local Ray head (dashboard + job server on 127.0.0.1, token auth on) and wait for it.
# Extra arguments go to `servers.py start ray`: --port, --dashboard-port, --num-cpus, --no-auth, ...
# Then:  eval "$(python infra/local/servers.py env ray)"  &&  ray job submit -- python ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "${SERVERS[@]}" start ray "$@"
