"""Run Alembic migrations programmatically (used by `manage.py db upgrade` and the tests)."""
from __future__ import annotations

import logging
import os

from alembic import command
from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig(os.path.join(MIGRATIONS_DIR, "alembic.ini"))
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(url), revision)
