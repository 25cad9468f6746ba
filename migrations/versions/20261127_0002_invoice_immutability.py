"""Finalized invoices and their lines are immutable in the database itself.

An UPDATE or DELETE of a finalized (or void) invoice fails, except the one
transition finalized -> void that touches only the void columns; lines of a
finalized invoice cannot be inserted, updated or deleted.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Columns that a void may not touch.
FROZEN = (
    "org_id", "period", "number", "currency", "shared_total", "byok_total", "total_spend",
    "opening_balance", "grants", "credits_used", "closing_balance", "summary", "finalized_at",
    "finalized_by", "created_at",
)


def _sqlite() -> None:
    same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in FROZEN)
    op.execute(f"""
        CREATE TRIGGER invoices_immutable_update BEFORE UPDATE ON invoices
        WHEN OLD.status <> 'draft'
         AND NOT (OLD.status = 'finalized' AND NEW.status = 'void' AND {same})
        BEGIN SELECT RAISE(ABORT, 'invoice is finalized and immutable'); END;
    """)
    op.execute("""
        CREATE TRIGGER invoices_immutable_delete BEFORE DELETE ON invoices
        WHEN OLD.status <> 'draft'
        BEGIN SELECT RAISE(ABORT, 'invoice is finalized and immutable'); END;
    """)
    for verb, ref in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
        op.execute(f"""
            CREATE TRIGGER invoice_lines_immutable_{verb.lower()} BEFORE {verb} ON invoice_lines
            WHEN (SELECT status FROM invoices WHERE id = {ref}.invoice_id) <> 'draft'
            BEGIN SELECT RAISE(ABORT, 'invoice is finalized and immutable'); END;
        """)


def _postgres() -> None:
    new_cols = ", ".join(f"NEW.{c}::text" for c in FROZEN)
    old_cols = ", ".join(f"OLD.{c}::text" for c in FROZEN)
    op.execute(f"""
        CREATE FUNCTION invoices_immutable() RETURNS trigger AS $$
        BEGIN
            IF OLD.status = 'draft' THEN
                IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
                RETURN NEW;
            END IF;
            IF TG_OP = 'UPDATE' AND OLD.status = 'finalized' AND NEW.status = 'void'
               AND ROW({new_cols}) IS NOT DISTINCT FROM ROW({old_cols}) THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'invoice is finalized and immutable' USING ERRCODE = 'check_violation';
        END $$ LANGUAGE plpgsql;
    """)
    op.execute("""
        CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
        FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
    """)
    op.execute("""
        CREATE FUNCTION invoice_lines_immutable() RETURNS trigger AS $$
        DECLARE parent_status text;
        BEGIN
            SELECT status INTO parent_status FROM invoices
             WHERE id = CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
            IF parent_status <> 'draft' THEN
                RAISE EXCEPTION 'invoice is finalized and immutable' USING ERRCODE = 'check_violation';
            END IF;
            IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
    """)
    op.execute("""
        CREATE TRIGGER invoice_lines_immutable BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
        FOR EACH ROW EXECUTE FUNCTION invoice_lines_immutable();
    """)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres()
    else:
        _sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER invoice_lines_immutable ON invoice_lines")
        op.execute("DROP FUNCTION invoice_lines_immutable()")
        op.execute("DROP TRIGGER invoices_immutable ON invoices")
        op.execute("DROP FUNCTION invoices_immutable()")
    else:
        for name in ("invoices_immutable_update", "invoices_immutable_delete", "invoice_lines_immutable_insert",
                     "invoice_lines_immutable_update", "invoice_lines_immutable_delete"):
            op.execute(f"DROP TRIGGER {name}")
