"""factory-boy factories over the real models and database."""
from __future__ import annotations

from decimal import Decimal

import factory
from factory.alchemy import SQLAlchemyModelFactory

from app import db
from app.billing import ledger
from app.models import Organization, User
from app.security import hash_password


class _Base(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session()  # noqa: E731
        sqlalchemy_session_persistence = "commit"


class OrganizationFactory(_Base):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")
    fallback_policy = factory.LazyFunction(dict)
    shared_markup_percent = Decimal(0)


class UserFactory(_Base):
    class Meta:
        model = User

    organization = factory.SubFactory(OrganizationFactory)
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    role = "developer"
    password_hash = factory.LazyFunction(lambda: hash_password("correct horse battery"))
    is_active = True


def issue_key(org: Organization, scope: str = "inference", name: str = "test") -> str:
    from app.cli import create_key

    with db.session_scope() as session:
        _, key = create_key(session, org.id, name, scope)
    return key


def grant(org: Organization, amount: str) -> None:
    with db.session_scope() as session:
        ledger.grant(session, org.id, Decimal(amount), note="test grant")
