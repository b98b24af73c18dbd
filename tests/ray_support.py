"""Shared by the tests that run jobs on a private local Ray instance (``--executor ray``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STAMPS = ("created", "exported")
"""The time stamps of JSON documents: the only bytes in which two executors' outputs may differ."""


@contextlib.contextmanager
def private_ray(worker_cache: Path) -> Iterator[Any]:
    """A private local Ray instance (2 CPUs, 127.0.0.1 only) whose workers use ``worker_cache`` as their
    ``PROTOLENS_CACHE_DIR`` (they inherit the environment of ``ray.init``); the environment of this process is
    restored once Ray is up, and Ray is shut down on exit."""
    from protolens.services.ray_executor import start_local_ray

    names = ("PROTOLENS_CACHE_DIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["PROTOLENS_CACHE_DIR"] = str(worker_cache)
    try:
        ray = start_local_ray(num_cpus=2)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield ray
    finally:
        ray.shutdown()


def without_stamps(value: Any) -> Any:
    """A JSON value with every :data:`STAMPS` key removed, at any depth."""
    if isinstance(value, dict):
        return {key: without_stamps(item) for key, item in value.items() if key not in STAMPS}
    if isinstance(value, list):
        return [without_stamps(item) for item in value]
    return value
