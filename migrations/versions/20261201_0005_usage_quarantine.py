"""usage_quarantine: usage events the database refused for a reason in their data, kept to inspect, retry or discard.

No foreign key on org_id on purpose: an event whose organization does not
exist must still be quarantined.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

import app.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = app.types.UTCDateTime(timezone=True)
    op.create_table(
        "usage_quarantine",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error_class", sa.String(length=64), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("quarantined_at", when, nullable=False),
        sa.Column("last_failed_at", when, nullable=False),
        sa.Column("resolved_at", when, nullable=True),
        sa.Column("resolution", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_quarantine")),
        sa.UniqueConstraint("request_id", name=op.f("uq_usage_quarantine_request_id")),
    )
    op.create_index("ix_usage_quarantine_status_org", "usage_quarantine", ["status", "org_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_quarantine_status_org", table_name="usage_quarantine")
    op.drop_table("usage_quarantine")
