"""The account a network was last read from.

A user may link another account of the same provider (a new GitHub login, a
Mastodon account moved to another instance). An incremental read of the new
account would add to the old account's network and remove nothing, so a sync
whose account differs from the one the network was read from runs full
(``sync.modes``: ``account_changed``).

Revision ID: 0007_network_account
Revises: 0006_stream_marks
"""

from alembic import op

revision = "0007_network_account"
down_revision = "0006_stream_marks"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
    -- "<instance> <account id>" (instance empty where ids are global); NULL: read
    -- before this column existed, taken as the same account
    ALTER TABLE networks ADD COLUMN account text;
    """)


def downgrade():
    op.execute("ALTER TABLE networks DROP COLUMN account")
