"""request hashes, follow offsets, deadlines, the audit log, the scheduler lease

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("events_offset", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("max_run_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("log_offset", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False, index=True),
        sa.Column("actor", sa.String(64), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False, index=True),
        sa.Column("job_id", sa.String(128), nullable=True, index=True),
        sa.Column("client", sa.String(128), nullable=True),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    op.create_table(
        "service_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_lease")
    op.drop_table("audit_log")
    with op.batch_alter_table("jobs") as batch:
        for name in ("log_offset", "max_run_s", "events_offset", "request_hash"):
            batch.drop_column(name)
