"""Shared fixtures of the sweep tests: one local Ray per module, the tiny wearable dataset."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_for_sweeps():
    """A 2-CPU local Ray started the way the sweep driver starts one (dashboard on a known port,
    so Ray Train's placement-group cleaner frees the CPUs of trials ASHA stops)."""
    import ray

    from sensorlm.training.trainer import default_env
    from sensorlm.ray_runtime import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(default_env(), num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def wearable_dir(tmp_path_factory):
    from sensorlm.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("wearable_tiny")
    prepare_synthetic("wearable", "tiny", out, seed=0, log=None)
    return out
