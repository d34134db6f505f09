"""The optional LLM curator: facts extracted from each new episode, after it is stored.

It is a consumer of the service's own ``memory.evt.memory.v1`` (group
``memory.curator``), never a step of ``Remember``: a write commits and answers
at the speed of the database, and a slow or failing model only delays the
facts derived from it. The event is published by the outbox relay after the
episode's transaction commits, so the curator never sees an uncommitted write.

For each ``added`` episode it reads the record as stored now (a record
forgotten meanwhile is never sent to a provider, and an erased one has no text
left), asks the :class:`~mainstay_memory.domain.extraction.FactExtractor` for
facts, and remembers each through :meth:`MemoryService.remember`, so derived
facts are curated (duplicate, merge, supersede) exactly like written ones.

Delivery is at least once, and the effects are once: each fact carries the
idempotency key ``curator:<episode id>:<n>``, so a redelivered or retried event
replays the stored results. It still asks the model again; an inbox claim
cannot avoid that without holding a database transaction open across a model
call of up to a minute. Failures follow the error tree: provider trouble
(timeouts, 429, 5xx) goes through the retry tiers, honouring ``Retry-After``;
an answer in the wrong shape (``MalformedFacts``) or a rejected key goes to the
DLQ with the reason.

The facts it writes are ``added`` events too, but never episodes, so the
curator never reacts to its own output.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mainstay_common.errors import NotFound
from mainstay_contracts.memory import MEMORY_EVENTS
from mainstay_memory.domain.extraction import derived_commands
from mainstay_memory.domain.model import Kind

if TYPE_CHECKING:
    from mainstay_common.bus import Bus, Event
    from mainstay_contracts.memory import MemoryEvent
    from mainstay_memory.domain.extraction import FactExtractor
    from mainstay_memory.service import MemoryService

__all__ = ["HANDLER", "Curator", "register_curator"]

HANDLER = "curator"
"""The handler name: consumer group ``memory.curator``, its retry tiers and DLQ."""

_log = logging.getLogger("mainstay.memory.curator")


class Curator:
    """Turns one memory event into derived facts (or, for anything but a new episode, nothing)."""

    def __init__(self, service: MemoryService, extractor: FactExtractor) -> None:
        self.service = service
        self.extractor = extractor

    @staticmethod
    def wants(event: MemoryEvent) -> bool:
        """Only a newly added episode: merges, supersessions and the curator's own facts are not."""
        return event.type == "added" and Kind(event.record.kind) is Kind.EPISODE

    async def handle(self, event: Event[MemoryEvent]) -> None:
        if not self.wants(event.payload):
            return
        episode_id = event.payload.record.id
        try:
            episode = await self.service.get(episode_id)
        except NotFound:
            _log.info("episode %s is gone; nothing to curate", episode_id)
            return
        if not episode.current or episode.kind is not Kind.EPISODE:
            # Forgotten, erased or expired since: its text must not reach a provider.
            _log.info("episode %s is no longer current; nothing to curate", episode_id)
            return
        facts = await self.extractor.extract(episode.content)
        commands = derived_commands(episode, facts, model=self.extractor.model_name)
        correlation_id = event.correlation_id or episode.source.task_id
        for command in commands:
            await self.service.remember(command, correlation_id=correlation_id)
        _log.info(
            "curated episode %s with %s: %d fact(s)",
            episode_id,
            self.extractor.model_name,
            len(commands),
        )


def register_curator(bus: Bus, service: MemoryService, extractor: FactExtractor) -> Curator:
    """Subscribe the curator to ``memory.evt.memory.v1``; call before the bus starts."""
    curator = Curator(service, extractor)
    bus.subscriber(MEMORY_EVENTS, handler=HANDLER)(curator.handle)
    return curator
