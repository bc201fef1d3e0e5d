"""The spend ledger: per provider and UTC day, what was called, counted and billed.

Revision ID: 0002_spend_ledger
Revises: 0001
"""

from alembic import op

revision = "0002_spend_ledger"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
    -- one row per provider and UTC day; Redis holds the day while it runs
    -- (state.spend), this is its durable copy: every column only grows
    -- (writers upsert GREATEST of what they hold), so flushes in any order agree
    CREATE TABLE spend_ledger (
        day            date NOT NULL,
        provider       text NOT NULL,
        calls          bigint NOT NULL DEFAULT 0,
        counted_calls  bigint NOT NULL DEFAULT 0,
        not_modified   bigint NOT NULL DEFAULT 0,
        resources      bigint NOT NULL DEFAULT 0,
        usd            numeric(18, 6) NOT NULL DEFAULT 0,
        updated_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (day, provider)
    );
    """)


def downgrade():
    op.execute("DROP TABLE spend_ledger")
