"""Fixtures of the job tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_with_gpus():
    """A local Ray of this module's own: 2 CPUs and 2 fake GPUs (``address="local"``: never another cluster)."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
