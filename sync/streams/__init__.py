"""The ``streams`` role: the providers' push channels become network changes in seconds.

``python -m sync.streams`` (the Procfile's ``streams`` line) runs one asyncio
process holding, for every linked account of the providers in ``STREAMS``:

- one Jetstream connection for all Bluesky users (``jetstream.py``),
- one Mastodon notification stream per linked account (``mastodon.py``),
- X Activity API subscriptions for every linked X account and one stream (``x.py``).

Each channel turns its frames (``providers.push``) into ``StreamChange``s and
hands them to the ``Applier`` (``applier.py``), which applies them in batches
in PostgreSQL (``NetworkStore.apply_stream_changes``: each event at most once,
by its identity) and only then lets the channel move its cursor in Redis
(``state.streams``). So a process killed at any instant loses nothing (the
cursor is behind what was applied, never ahead) and doubles nothing (a
re-read event is known). Several processes share the channels by leases
(``role.py``): Jetstream and X to one holder each, Mastodon accounts in shards.
"""
