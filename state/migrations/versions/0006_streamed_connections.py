"""Which stored connections a push channel added and no sync has read since.

A newest-first head (X, Bluesky) stops at the first connection it already
knows, on the premise that everything older is known too. A connection a
stream added breaks that premise: it is the newest known, yet a follow just
older than it may never have been pushed (a channel's lost event). A head
passes connections marked ``streamed`` and stops at the first one a sync read.
A sync that reads a connection clears its mark.

Revision ID: 0006_streamed_connections
Revises: 0005_federation
"""

from alembic import op

revision = "0006_streamed_connections"
down_revision = "0005_federation"
branch_labels = None
depends_on = None


def upgrade():
    # a constant default: no table rewrite (PostgreSQL 11+)
    op.execute("ALTER TABLE connections ADD COLUMN streamed boolean NOT NULL DEFAULT false")
    # how many a network holds (a head's first page must reach past them): few rows
    op.execute("CREATE INDEX connections_streamed ON connections (network_id) WHERE streamed")


def downgrade():
    op.execute("DROP INDEX connections_streamed")
    op.execute("ALTER TABLE connections DROP COLUMN streamed")
