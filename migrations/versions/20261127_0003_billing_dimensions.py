"""Billing: priced/unpriced as a rollup dimension, 64-bit invoice line counts, ledger indexes.

- usage_rollups gains `cost_status` in its unique key, so unpriced usage is
  listed on invoices exactly, never mixed into a priced line.
- invoice_lines gains `credential` (for unpriced lines) and 64-bit counts: a
  month of one model can exceed 2^31 tokens.
- credit_entries gains (org_id, kind, created_at) for the grants of a period
  and (org_id, id) for paging the ledger newest first.

On SQLite, invoice_lines is altered in place (never recreated in batch mode),
which would silently drop the immutability triggers of 0002.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_DIMS = ["org_id", "day", "provider", "model", "credential", "api_key_id", "byok_label", "fallback_reason",
            "billing_period"]
LINE_COUNTS = ("requests", "input_tokens", "output_tokens", "cached_tokens")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("usage_rollups") as batch_op:
        batch_op.add_column(sa.Column("cost_status", sa.String(length=10), nullable=False,
                                      server_default="priced"))
        batch_op.drop_constraint("uq_usage_rollups_dims", type_="unique")
        batch_op.create_unique_constraint("uq_usage_rollups_dims", OLD_DIMS + ["cost_status"])
    op.add_column("invoice_lines", sa.Column("credential", sa.String(length=8), nullable=False, server_default=""))
    if postgres:
        for name in LINE_COUNTS:
            op.alter_column("invoice_lines", name, type_=sa.BigInteger(), existing_nullable=False)
    op.create_index("ix_credit_entries_org_kind_created", "credit_entries", ["org_id", "kind", "created_at"])
    op.create_index("ix_credit_entries_org_id", "credit_entries", ["org_id", "id"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_credit_entries_org_id", table_name="credit_entries")
    op.drop_index("ix_credit_entries_org_kind_created", table_name="credit_entries")
    if postgres:
        for name in LINE_COUNTS:
            op.alter_column("invoice_lines", name, type_=sa.Integer(), existing_nullable=False)
    op.drop_column("invoice_lines", "credential")
    with op.batch_alter_table("usage_rollups") as batch_op:
        batch_op.drop_constraint("uq_usage_rollups_dims", type_="unique")
        batch_op.create_unique_constraint("uq_usage_rollups_dims", OLD_DIMS)
        batch_op.drop_column("cost_status")
