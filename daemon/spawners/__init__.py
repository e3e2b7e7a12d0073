"""Executor spawners: how the daemon gets workers. Spawners start workers; they never import them."""
from .base import ExecutorSpawner, SpawnError
from .cloud import CloudSpawner
from .local import LocalSpawner, cleanup_leftovers
from .mock import MockSpawner

SPAWNERS = {"mock": MockSpawner, "local": LocalSpawner, "cloud": CloudSpawner}


def available():
    return tuple(SPAWNERS)


__all__ = ["CloudSpawner", "ExecutorSpawner", "LocalSpawner", "MockSpawner", "SpawnError", "SPAWNERS", "available",
           "cleanup_leftovers"]
