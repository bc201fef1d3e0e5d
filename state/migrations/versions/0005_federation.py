"""Federated providers: a linked account is known by its instance too.

A Mastodon account id is a row id of its server: ``109…`` on mastodon.social
and the same number on fosstodon.org are two people, and the ids in a
user's followers list are ids *on that user's instance*. So a linked
account's key gains its instance (``''`` for providers whose ids are global:
GitHub, X, Facebook, LinkedIn, and Bluesky's DIDs), and members are matched
against the linked accounts on the network owner's own instance.

Revision ID: 0005_federation
Revises: 0004_stream_events
"""

from alembic import op

revision = "0005_federation"
down_revision = "0004_stream_events"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
    ALTER TABLE linked_accounts ADD COLUMN instance text COLLATE "C" NOT NULL DEFAULT '';
    ALTER TABLE linked_accounts DROP CONSTRAINT linked_accounts_pkey;
    ALTER TABLE linked_accounts ADD PRIMARY KEY (provider, instance, provider_uid);
    """)


def downgrade():
    op.execute("""
    DELETE FROM linked_accounts a USING linked_accounts b
     WHERE a.provider = b.provider AND a.provider_uid = b.provider_uid
       AND a.instance <> '' AND (a.linked_at, a.instance) < (b.linked_at, b.instance);
    ALTER TABLE linked_accounts DROP CONSTRAINT linked_accounts_pkey;
    ALTER TABLE linked_accounts DROP COLUMN instance;
    ALTER TABLE linked_accounts ADD PRIMARY KEY (provider, provider_uid);
    """)
