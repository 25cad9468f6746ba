"""usage_daily: the dashboard's coarse daily summary (org × day × provider × model × credential × cost status).

Maintained with usage_rollups in the recording transaction; this migration
fills it from the existing rollups, which hold every record already.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

import app.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DIMS = "org_id, day, billing_period, provider, model, credential, cost_status"
SUMS = ("requests", "errors", "fallbacks", "unpriced_requests", "prompt_tokens", "completion_tokens",
        "cached_tokens", "cache_write_tokens", "reasoning_tokens", "latency_ms_total", "cost", "charged")
# The summary of the rollups already stored (a test runs this statement against seeded traffic).
FILL = (
    f"INSERT INTO usage_daily ({DIMS}, {', '.join(SUMS)}, reason_requests, reason_charged) "
    f"SELECT {DIMS}, {', '.join(f'SUM({name})' for name in SUMS)}, "
    "SUM(CASE WHEN fallback_reason <> '' THEN requests ELSE 0 END), "
    "SUM(CASE WHEN fallback_reason <> '' THEN charged ELSE 0 END) "
    f"FROM usage_rollups GROUP BY {DIMS}"
)


def upgrade() -> None:
    big = sa.BigInteger()
    money = app.types.Money(precision=20, scale=10)
    op.create_table(
        "usage_daily",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("billing_period", sa.String(length=7), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("credential", sa.String(length=8), nullable=False),
        sa.Column("cost_status", sa.String(length=10), nullable=False),
        *(sa.Column(name, big, nullable=False) for name in SUMS[:10]),
        sa.Column("cost", money, nullable=False),
        sa.Column("charged", money, nullable=False),
        sa.Column("reason_requests", big, nullable=False),
        sa.Column("reason_charged", money, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_usage_daily_org_id_organizations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_daily")),
        sa.UniqueConstraint("org_id", "day", "provider", "model", "credential", "billing_period", "cost_status",
                            name="uq_usage_daily_dims"),
    )
    op.create_index("ix_usage_daily_org_day", "usage_daily", ["org_id", "day"])
    op.create_index("ix_usage_daily_org_period", "usage_daily", ["org_id", "billing_period"])
    op.execute(FILL)


def downgrade() -> None:
    op.drop_index("ix_usage_daily_org_period", table_name="usage_daily")
    op.drop_index("ix_usage_daily_org_day", table_name="usage_daily")
    op.drop_table("usage_daily")
