"""Networks per (user, provider, relation), linked accounts, finalized syncs, the change feed.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    create_networks()
    create_connections()
    create_linked_accounts()
    create_finalized_syncs()
    create_change_feed()


def create_networks():
    op.execute("""
    CREATE TABLE networks (
        network_id  bigserial PRIMARY KEY,
        user_id     text NOT NULL,
        provider    text NOT NULL,
        relation    text NOT NULL,
        sync_id     text,
        synced_at   timestamptz,
        count       integer NOT NULL DEFAULT 0,
        UNIQUE (user_id, provider, relation)
    );
    """)


def create_connections():
    op.execute("""
    -- ids compare bytewise (COLLATE "C"): a stable paging order, and joins between
    -- connections and linked accounts need one collation
    -- one row per connection of a live network; the primary key pages a network
    CREATE TABLE connections (
        network_id     bigint NOT NULL REFERENCES networks ON DELETE CASCADE,
        connection_id  text COLLATE "C" NOT NULL,
        handle         text NOT NULL DEFAULT '',
        PRIMARY KEY (network_id, connection_id)
    );
    -- "whose networks hold this account?": a newly linked account's member_joined
    -- entries cost one index lookup, not a scan
    CREATE INDEX connections_by_connection_id ON connections (connection_id);
    """)


def create_linked_accounts():
    op.execute("""
    -- every provider account a user of the main app linked, by its stable provider id
    CREATE TABLE linked_accounts (
        provider      text NOT NULL,
        provider_uid  text COLLATE "C" NOT NULL,
        user_id       text NOT NULL,
        account_id    text NOT NULL,
        linked_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (provider, provider_uid)
    );
    CREATE INDEX linked_accounts_by_user ON linked_accounts (user_id, provider);
    """)


def create_finalized_syncs():
    op.execute("""
    -- the idempotency key of finalization: a sync id finalizes once
    CREATE TABLE finalized_syncs (
        sync_id       text PRIMARY KEY,
        network_id    bigint NOT NULL REFERENCES networks ON DELETE CASCADE,
        status        text NOT NULL,
        count         integer NOT NULL,
        added         integer NOT NULL,
        removed       integer NOT NULL,
        initial       boolean NOT NULL,
        finalized_at  timestamptz NOT NULL DEFAULT now()
    );
    """)


def create_change_feed():
    op.execute("""
    -- the change feed; cursors are handed out under one advisory lock held to
    -- commit, so they grow in commit order and a reader never skips an entry
    CREATE TABLE changes (
        cursor            bigserial PRIMARY KEY,
        at                timestamptz NOT NULL DEFAULT now(),
        kind              text NOT NULL,
        user_id           text NOT NULL,
        provider          text NOT NULL,
        relation          text NOT NULL,
        sync_id           text,
        connection_id     text COLLATE "C",
        connection_handle text,
        member_user_id    text,
        initial           boolean NOT NULL DEFAULT false,
        counts            jsonb
    );
    CREATE INDEX changes_by_sync ON changes (sync_id, cursor);
    CREATE INDEX changes_by_at ON changes (at);
    """)


def downgrade():
    op.execute("DROP TABLE changes, finalized_syncs, linked_accounts, connections, networks")
