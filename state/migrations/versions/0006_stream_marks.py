"""What a push channel said about a connection that no sync has read since.

A sync reads a network over seconds or minutes; a stream changes it within a
second. Two ways the two disagree without this table:

- a newest-first head (X, Bluesky) stops at the first connection it already
  knows, on the premise that everything older is known too. A connection a
  stream added breaks it: it is the newest known, yet a follow just older may
  never have been pushed (a channel's lost event). A head passes connections
  with an ``added`` mark and stops at the first one a sync read.
- a full sync that read its pages before a pushed change would undo it at
  finalization: remove a connection the stream added meanwhile, re-add one the
  stream removed (and write feed entries for both). A change marked after the
  sync started wins over the sync's read.

One row per (network, connection): the last pushed change and when it was
applied (PostgreSQL's clock, as the sync's start is compared with it). A sync
that reads a connection clears its ``added`` mark; a full sync clears every
mark older than its start (it read the network after them).

Revision ID: 0006_stream_marks
Revises: 0005_federation
"""

from alembic import op

revision = "0006_stream_marks"
down_revision = "0005_federation"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
    CREATE TABLE stream_marks (
        network_id     bigint NOT NULL REFERENCES networks ON DELETE CASCADE,
        connection_id  text COLLATE "C" NOT NULL,
        kind           text NOT NULL CHECK (kind IN ('added', 'removed')),
        at             timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (network_id, connection_id)
    );
    """)


def downgrade():
    op.execute("DROP TABLE stream_marks")
