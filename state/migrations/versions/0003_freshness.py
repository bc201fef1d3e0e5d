"""What a network's freshness rests on: sync modes, verification, stream changes.

The columns the change-aware syncs (modes, heads, conditional reads), federation and
the push channels share, in one revision so each of them builds on the same schema.

Revision ID: 0003_freshness
Revises: 0002_spend_ledger
"""

from alembic import op

revision = "0003_freshness"
down_revision = "0002_spend_ledger"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
    -- verified_at: the last full (verifying) sync; a network never fully read has none,
    --   so `auto` makes its next sync full. updated_at: the last change from a sync or
    --   a stream. stated_count: what the provider's profile said the last time (a hint
    --   the next sync compares against). head: the provider's "newer than this" marker
    --   of the newest connection known (Mastodon's min_id). needs_full: something (a push
    --   channel's gap, a count that went down) says the next sync must verify.
    ALTER TABLE networks
        ADD COLUMN verified_at   timestamptz,
        ADD COLUMN updated_at    timestamptz,
        ADD COLUMN stated_count  integer,
        ADD COLUMN head          text,
        ADD COLUMN needs_full    boolean NOT NULL DEFAULT false;
    -- every network synced before modes existed was read in full
    UPDATE networks SET verified_at = synced_at, updated_at = synced_at;
    -- how each sync read its network: 'full' or 'incremental'
    ALTER TABLE finalized_syncs ADD COLUMN mode text NOT NULL DEFAULT 'full';
    -- where a change came from: a sync, or a provider's push channel (sync_id NULL)
    ALTER TABLE changes ADD COLUMN source text NOT NULL DEFAULT 'sync';
    -- the stale re-sync command picks networks by their last verification
    CREATE INDEX networks_by_verified_at ON networks (verified_at NULLS FIRST);
    """)


def downgrade():
    op.execute("""
    DROP INDEX networks_by_verified_at;
    ALTER TABLE changes DROP COLUMN source;
    ALTER TABLE finalized_syncs DROP COLUMN mode;
    ALTER TABLE networks
        DROP COLUMN verified_at, DROP COLUMN updated_at, DROP COLUMN stated_count,
        DROP COLUMN head, DROP COLUMN needs_full;
    """)
