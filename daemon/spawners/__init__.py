"""Executor spawners: how the daemon gets workers. Spawners start workers; they never import them."""
import logging

from .base import ExecutorSpawner, SpawnError
from .cloud import CloudSpawner, leftover_services, retire
from .local import LocalSpawner, docker_client, owner_of, remove_leftover_containers
from .mock import MockSpawner

SPAWNERS = {"mock": MockSpawner, "local": LocalSpawner, "cloud": CloudSpawner}
log = logging.getLogger("summa.daemon")


def available():
    return tuple(SPAWNERS)


def cleanup_leftovers(config):
    """Remove the Swarm services and then the containers an earlier run of this daemon left
    (after a crash, say), waiting until they are gone; quiet when Docker is absent. Returns
    how many services and containers there were."""
    try:
        client = docker_client()
    except (SpawnError, ImportError):
        return 0
    owner = owner_of(config)
    services = leftover_services(client, owner)
    for service in services:            # first: Swarm would replace the containers of a live one
        retire(service)
    containers = remove_leftover_containers(client, owner)
    if services or containers:
        log.info("removed %d leftover worker service(s) and %d container(s)", len(services), containers)
    return len(services) + containers


__all__ = ["CloudSpawner", "ExecutorSpawner", "LocalSpawner", "MockSpawner", "SpawnError", "SPAWNERS", "available",
           "cleanup_leftovers"]
