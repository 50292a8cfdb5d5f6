"""Starting Ray for a job: a local Ray of our own on a laptop, the cluster under `ray job submit`.

One place for what every entry point needs (training, sweeps, embedding): join ``RAY_ADDRESS``
when it is set; otherwise start a new local Ray (``address="local"``) even when another Ray
instance runs on the machine (a bare ``ray.init()`` then fails with "Found multiple active Ray
instances"), with a dashboard on a chosen port that every process is told about (Ray Train's
placement-group cleaner finds trials stopped by ASHA through it). Ray's own INFO chatter is
kept at WARNING unless ``verbose``, and so is its notice that token authentication, its default,
is on (it stays on).
"""

from __future__ import annotations

import logging
import os
import socket


# What Ray Train does differently on one machine, for a job's own local Ray and for a head on
# this machine (infra/local/servers.py): no spot instances to watch for preemption (the watcher's
# actor only logs an error-level line); and the controller polls its workers every 0.5 s, not
# every 2 s: a finished run ends up to 2 s late twice over (worker group, then shutdown), and
# polling costs little here (each run ends about 3 s sooner, bench/RESULTS.md "Start-up").
ONE_MACHINE_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DropTokenAuthNotice(logging.Filter):
    """Ray 2.60 warns at every start that it turned on token authentication, its default: what we
    want, not a problem to report. (Setting RAY_AUTH_MODE silences it only before ``import ray``.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_token_auth_notice() -> None:
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropTokenAuthNotice) for f in log.filters):
        log.addFilter(_DropTokenAuthNotice())


def init_ray(env_vars: dict[str, str] | None = None, num_cpus: int | None = None, verbose: bool | None = None) -> None:
    """Start a local Ray (or join ``RAY_ADDRESS``) for this job; a no-op if Ray is up.

    Args:
        env_vars: environment for every Ray process of this job.
        num_cpus: logical CPUs of a local Ray (None = the machine's).
        verbose: Ray's INFO logs too (controller, worker groups, autoscaler); None = as the
            command's ``--verbose`` said (``SENSORLM_VERBOSE``).
    """
    import ray

    if verbose is None:
        verbose = bool(os.environ.get("SENSORLM_VERBOSE"))

    if ray.is_initialized():
        return
    env = dict(env_vars or {})
    if not verbose:
        _quiet_token_auth_notice()
    level = "INFO" if verbose else "WARNING"
    quiet = dict(log_to_driver=True, logging_level=logging.INFO if verbose else logging.WARNING,
                 logging_config=ray.LoggingConfig(log_level=level))
    if os.environ.get("RAY_ADDRESS"):
        # A head on this machine (`infra/local/servers.py env ray` names its dashboard): its
        # workers need the address too. Not through Ray Client (ray://), where it would be this
        # machine's port-forward, wrong inside the cluster.
        if os.environ.get("RAY_API_SERVER_ADDRESS") and not os.environ["RAY_ADDRESS"].startswith("ray://"):
            env.setdefault("RAY_API_SERVER_ADDRESS", os.environ["RAY_API_SERVER_ADDRESS"])
        ray.init(runtime_env={"env_vars": env}, **quiet)
        return
    port = _free_port()
    env = {**ONE_MACHINE_ENV, **env, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    ctx = ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        runtime_env={"env_vars": env},
        **quiet,
    )
    if not getattr(ctx, "dashboard_url", None) or not str(ctx.dashboard_url).endswith(f":{port}"):
        print(f"[sensorlm] warning: the Ray dashboard is not at port {port} ({getattr(ctx, 'dashboard_url', None)}); "
              "trials stopped early may not release their workers", flush=True)
