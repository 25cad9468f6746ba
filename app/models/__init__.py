"""All models, imported here so Alembic and create_all see the whole schema."""
from app.models.account import ROLES, AuditLog, LoginThrottle, Organization, User
from app.models.credit import CreditAccount, CreditEntry
from app.models.invoice import FinalizedPeriod, Invoice, InvoiceCounter, InvoiceLine
from app.models.keys import SCOPES, ApiKey
from app.models.pricing import Price
from app.models.usage import UsageAttempt, UsageDaily, UsageRecord, UsageRollup

__all__ = [
    "ROLES", "SCOPES", "ApiKey", "AuditLog", "CreditAccount", "CreditEntry", "FinalizedPeriod",
    "Invoice", "InvoiceCounter", "InvoiceLine", "LoginThrottle", "Organization", "Price",
    "UsageAttempt", "UsageDaily", "UsageRecord", "UsageRollup", "User",
]
