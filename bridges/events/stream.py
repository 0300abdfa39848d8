"""The one JetStream stream over ``unityplan.>``, created or updated at start-up."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from core.events import SUBJECT_ROOT

log = logging.getLogger("unityplan.events.stream")


def stream_config(
    name: str, *, duplicate_window: float, max_age: float, replicas: int = 1
) -> StreamConfig:
    return StreamConfig(
        num_replicas=replicas,
        name=name,
        subjects=[f"{SUBJECT_ROOT}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        duplicate_window=duplicate_window,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it when its settings differ. Safe to run from every process."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("Created JetStream stream %s over %s", config.name, config.subjects)
        return
    current = info.config
    if (
        current.subjects != config.subjects
        or current.duplicate_window != config.duplicate_window
        or current.max_age != config.max_age
        or (current.num_replicas or 1) != (config.num_replicas or 1)
    ):
        await js.update_stream(config)
        log.info("Updated JetStream stream %s", config.name)
