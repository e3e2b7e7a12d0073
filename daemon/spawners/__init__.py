"""Executor spawners: how the daemon gets workers. Spawners start workers; they never import them."""
from .base import ExecutorSpawner, SpawnError
from .mock import MockSpawner

SPAWNERS = {"mock": MockSpawner}


def available():
    return tuple(SPAWNERS)


__all__ = ["ExecutorSpawner", "MockSpawner", "SpawnError", "SPAWNERS", "available"]
