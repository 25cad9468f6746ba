"""Alembic migrations are the only source of the schema: models and migrations must agree."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from app import db
from app.db import Base
from app.migrate import alembic_config


def test_models_match_migrations(app):
    with db.get_engine().connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations disagree; write a migration: {diff}"


def test_migrations_form_one_line_of_history():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"


def test_database_is_at_head(app):
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    with db.get_engine().connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == script.get_current_head()
