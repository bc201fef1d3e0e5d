"""The push channels' applied events: the idempotency key of a stream change.

A channel may deliver an event again (Jetstream's replay from a rewound cursor,
Mastodon's gap fill overlapping the stream, X's backfill, two ``streams``
processes during a lease hand-over). Each event's identity is inserted in the
same transaction that applies it, so an event changes a network at most once,
even when the connection it adds was removed in between (a replayed create
after its delete).

Revision ID: 0004_stream_events
Revises: 0003_freshness
"""

from alembic import op

revision = "0004_stream_events"
down_revision = "0003_freshness"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
    -- one row per applied push event: '<channel>:<the channel's own event identity>'
    CREATE TABLE stream_events (
        event_key   text COLLATE "C" PRIMARY KEY,
        applied_at  timestamptz NOT NULL DEFAULT now()
    );
    -- pruned with the change feed (db prune): far longer than any channel replays
    CREATE INDEX stream_events_by_applied_at ON stream_events (applied_at);
    """)


def downgrade():
    op.execute("DROP TABLE stream_events")
