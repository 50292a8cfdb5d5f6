"""The one error wrapper of every command (``sensorlm ...``, ``jobs/``, ``tune/``): a failure the user
can fix is one line and exit code 2, a bug one line and exit code 1 (its traceback with
``--verbose``). Importable from any layer: it depends only on `sensorlm.typed_config`."""

from __future__ import annotations

import sys
from typing import Callable


def run_guarded(run: Callable[[], int], prog: str, verbose: bool = False) -> int:
    """Run a command; a failure the user can fix (bad config or data, a missing file or model, a
    file it may not read or write, an unreachable tracking server) is one line on stderr and exit
    code 2. Anything else is a bug: one line and exit code 1, its traceback only with `verbose`.
    Messages are redacted (a tracking URI may carry a password)."""
    from sensorlm.typed_config import ConfigError, redact

    try:
        return int(run() or 0)
    except ConfigError as exc:
        print(f"{prog}: config error: {redact(_one_line(exc))}", file=sys.stderr)
    except PermissionError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: permission denied{where} ({redact(_one_line(exc.strerror or exc))})", file=sys.stderr)
    except (ValueError, OSError) as exc:  # OSError: missing files, full disks, refused connections
        print(f"{prog}: error: {redact(_one_line(exc))}", file=sys.stderr)
    except Exception as exc:
        if type(exc).__name__ == "MlflowException":  # a missing registered model or alias, a refused request
            print(f"{prog}: error: {redact(_one_line(getattr(exc, 'message', exc)))}", file=sys.stderr)
            return 2
        if verbose:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {redact(_one_line(exc))} (a bug in sensorlm: rerun "
              "with --verbose for the traceback and report it)", file=sys.stderr)
        return 1
    return 2


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 800 else text[:797] + "..."
