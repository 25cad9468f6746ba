"""Dashboard forms: every field validated, its problem shown next to it, nothing saved when one fails."""
from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app.billing.money import parse_amount
from app.models import ROLES, SCOPES

try:  # WTForms 3.3 deprecates (value, label) tuples in favour of SelectChoice
    from wtforms.fields.choices import SelectChoice
except ImportError:  # pragma: no cover - older WTForms
    SelectChoice = None


def choices(pairs) -> list:
    return [SelectChoice(v, label) if SelectChoice else (v, label) for v, label in pairs]


EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_EMAIL = 254  # RFC 5321's limit on a forward path, and the users.email column
# Price catalog ids: what a price form accepts is what a price page may be asked for.
PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MODEL_NAME = re.compile(r"[\w.:/@-]{1,128}")
ROLE_CHOICES = choices((r, r.capitalize()) for r in ROLES)


def _valid_email(form, field) -> None:
    field.data = (field.data or "").strip().lower()
    if not EMAIL.fullmatch(field.data):
        raise ValidationError("Enter an email address like name@example.com.")


def _role(form, field) -> None:
    # SelectField checks choices too; this keeps the message readable for a forged value.
    if field.data not in ROLES:
        raise ValidationError(f"Unknown role; choose one of {', '.join(ROLES)}.")


class CreateUserForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired("Enter an email address."), Length(max=MAX_EMAIL),
                                             _valid_email])
    password = PasswordField("Password", validators=[DataRequired("Enter a password."),
                                                     Length(min=12, max=200, message="Use 12 to 200 characters.")])
    role = SelectField("Role", choices=ROLE_CHOICES, validate_choice=False, validators=[_role])


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES, validate_choice=False, validators=[_role])


class GrantForm(FlaskForm):
    amount = StringField("Amount (USD)", validators=[DataRequired("Enter an amount.")])
    note = StringField("Note", validators=[Optional(), Length(max=500)])

    def validate_amount(self, field) -> None:
        try:
            field.parsed = parse_amount(field.data)
        except ValueError as exc:
            raise ValidationError(str(exc).capitalize() + ".") from None
        if field.parsed > Decimal("1000000"):
            raise ValidationError("A single grant is limited to $1,000,000.")


class KeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Give the key a name."), Length(max=100)])
    scope = SelectField("Scope", choices=choices((s, s) for s in SCOPES), validate_choice=False)

    def validate_scope(self, field) -> None:
        if field.data not in SCOPES:
            raise ValidationError(f"Unknown scope; choose one of {', '.join(SCOPES)}.")


class VoidForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[DataRequired("Say why the invoice is voided."),
                                                 Length(min=5, max=1000, message="Use 5 to 1,000 characters.")])


def _price(required: bool):
    def check(form, field) -> None:
        raw = (field.data or "").strip()
        field.parsed = None
        if not raw:
            if required:
                raise ValidationError("Enter a price per million tokens.")
            return
        try:
            value = Decimal(raw.replace(",", ""))
        except InvalidOperation:
            raise ValidationError(f"'{raw[:20]}' is not a number.") from None
        if not value.is_finite() or value < 0:
            raise ValidationError("A price must be zero or more.")
        if value > Decimal("100000") or value != value.quantize(Decimal("0.000001")):
            raise ValidationError("Use at most 6 decimal places and at most $100,000 per million tokens.")
        field.parsed = value

    return check


class PriceForm(FlaskForm):
    provider = StringField("Provider", validators=[DataRequired("Enter a provider id."), Length(max=32)])
    model = StringField("Model", validators=[DataRequired("Enter a model name."), Length(max=128)])
    input = StringField("Input $/1M", validators=[_price(True)])
    output = StringField("Output $/1M", validators=[_price(True)])
    cached_input = StringField("Cached input $/1M", validators=[_price(False)])
    cache_write = StringField("Cache write $/1M", validators=[_price(False)])
    reasoning = StringField("Reasoning $/1M", validators=[_price(False)])
    effective_from = StringField("Effective from (UTC date)", validators=[DataRequired("Enter a date.")])
    source = StringField("Source", validators=[Optional(), Length(max=300)])

    def validate_provider(self, field) -> None:
        field.data = (field.data or "").strip().lower()
        if not PROVIDER_ID.fullmatch(field.data):
            raise ValidationError("Provider ids are lowercase letters, digits, - and _.")

    def validate_model(self, field) -> None:
        field.data = (field.data or "").strip()
        if not MODEL_NAME.fullmatch(field.data):
            raise ValidationError("A model name has no spaces or special characters.")

    def validate_effective_from(self, field) -> None:
        raw = (field.data or "").strip()
        try:
            field.parsed = date.fromisoformat(raw)
        except ValueError:
            raise ValidationError(f"'{raw[:20]}' is not a date (YYYY-MM-DD).") from None
