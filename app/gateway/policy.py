"""Fallback policy: request value > organization default > platform default (DESIGN §2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from app.gateway.errors import ErrorClass

# The switches an admin sees, and the upstream error classes each one covers.
TRIGGERS: dict[str, tuple[ErrorClass, ...]] = {
    "rate_limit": (ErrorClass.RATE_LIMIT,),
    "overload": (ErrorClass.OVERLOADED, ErrorClass.SERVER_ERROR),
    "timeout": (ErrorClass.TIMEOUT, ErrorClass.CONNECTION, ErrorClass.MALFORMED),
    "auth": (ErrorClass.AUTH,),
    "budget": (ErrorClass.BUDGET,),
}
DEFAULT_TRIGGERS = {"rate_limit": True, "overload": True, "timeout": True, "auth": False, "budget": False}
# 400-class errors would fail on the shared pool too: never a fallback, whatever the policy says.
NEVER = (ErrorClass.BAD_REQUEST, ErrorClass.NOT_FOUND)
TRIGGER_OF = {cls: name for name, classes in TRIGGERS.items() for cls in classes}


@dataclass(slots=True)
class FallbackPolicy:
    enabled: bool = True
    triggers: dict[str, bool] = field(default_factory=lambda: dict(DEFAULT_TRIGGERS))
    # provider id -> {"enabled": bool?, "triggers": {...}?}
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    monthly_cap: Decimal | None = None  # credits fallback may spend per UTC month
    alert_threshold: Decimal = Decimal("0.20")  # fallback rate that raises a dashboard alert

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, platform_default: bool = True) -> "FallbackPolicy":
        data = data or {}
        triggers = dict(DEFAULT_TRIGGERS)
        triggers.update({k: bool(v) for k, v in (data.get("triggers") or {}).items() if k in TRIGGERS})
        return cls(
            enabled=bool(data.get("enabled", platform_default)),
            triggers=triggers,
            providers={k: v for k, v in (data.get("providers") or {}).items() if isinstance(v, dict)},
            monthly_cap=_decimal(data.get("monthly_cap")),
            alert_threshold=_decimal(data.get("alert_threshold")) or Decimal("0.20"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "triggers": dict(self.triggers),
            "providers": self.providers,
            "monthly_cap": None if self.monthly_cap is None else str(self.monthly_cap),
            "alert_threshold": str(self.alert_threshold),
        }

    def enabled_for(self, provider: str) -> bool:
        override = self.providers.get(provider, {})
        return bool(override.get("enabled", self.enabled))

    def allows(self, error_class: ErrorClass, provider: str) -> bool:
        """Whether a BYOK failure of this class on this provider may move to the shared pool."""
        if error_class in NEVER:
            return False
        trigger = TRIGGER_OF.get(error_class)
        if trigger is None:
            return False
        override = (self.providers.get(provider) or {}).get("triggers") or {}
        return bool(override.get(trigger, self.triggers.get(trigger, False)))


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
