"""Database engine, declarative base, and the session used per request and per job."""
from __future__ import annotations

import os
from contextlib import contextmanager

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_factory = sessionmaker(expire_on_commit=False)
session: scoped_session[Session] = scoped_session(_factory)
_engine: Engine | None = None
_hold_engine: Engine | None = None


def normalize_url(url: str, instance_path: str | None = None) -> str:
    """Use psycopg 3 for postgres URLs and anchor relative SQLite paths to the instance folder."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and instance_path:
        rel = url[len("sqlite:///"):]
        if rel.startswith("instance/"):
            rel = rel[len("instance/"):]
        os.makedirs(instance_path, exist_ok=True)
        url = "sqlite:///" + os.path.join(instance_path, rel)
    return url


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return pin_utc(create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True))


def pin_utc(engine: Engine) -> Engine:
    """Every PostgreSQL session runs in UTC, whatever the server, database, role or client (PGTZ) default.

    Billing periods and rollup days are UTC months and days; SQL that turns a
    timestamptz into a date (date(), date_trunc, ::date) uses the session's
    TimeZone. A SET after connecting, because a startup option loses to PGTZ.
    """

    @event.listens_for(engine, "connect")
    def _utc(dbapi_conn, _record):
        with dbapi_conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        if not dbapi_conn.autocommit:
            dbapi_conn.commit()  # a rolled-back SET would be undone

    return engine


def init_engine(url: str) -> Engine:
    global _engine, _hold_engine
    if _engine is not None:
        _engine.dispose()
    if _hold_engine is not None:
        _hold_engine.dispose()
        _hold_engine = None
    _engine = make_engine(url)
    session.remove()
    _factory.configure(bind=_engine)
    return _engine


def get_engine() -> Engine:
    if _engine is None:
        raise RuntimeError("database engine not initialised; call create_app() first")
    return _engine


def hold_engine() -> Engine:
    """PostgreSQL connections for credit reservations, committed without waiting for the WAL flush.

    A reservation is a hold, not money moved: should the server crash before
    flushing it, the hold is gone and the settlement, which releases only
    holds it finds, stays exact. Not waiting for the flush takes a disk sync
    off every shared-pool request and out of the account row's lock.
    """
    global _hold_engine
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        return engine
    if _hold_engine is None:
        # No pre-ping (a round trip per checkout): the caller retries once on a dropped connection.
        _hold_engine = pin_utc(create_engine(engine.url, pool_size=10, max_overflow=20, pool_pre_ping=False,
                                             isolation_level="AUTOCOMMIT",
                                             connect_args={"options": "-c synchronous_commit=off"}))
    return _hold_engine


def is_postgres() -> bool:
    return get_engine().dialect.name == "postgresql"


@contextmanager
def session_scope():
    """A fresh transaction outside the request session: commit on success, roll back on error."""
    s = _factory()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()
