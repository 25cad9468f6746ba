"""Small helpers shared by the data-plane tests."""
from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from app import db
from app.models import UsageRecord

MESSAGES = [{"role": "user", "content": "Say hello"}]


def chat(client, key: str, **body: Any):
    payload = {"model": "openai/gpt-4o-mini", "messages": MESSAGES, **body}
    return client.post("/v1/chat/completions", data=orjson.dumps(payload),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def byok(api_key: str, provider: str = "openai", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "credentials": {"api_key": api_key}, **extra}


def sse_payloads(text: str) -> list[Any]:
    """The JSON payloads of an SSE body ('[DONE]' kept as a string)."""
    out = []
    for block in text.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            joined = "\n".join(data)
            out.append(joined if joined == "[DONE]" else orjson.loads(joined))
    return out


def records() -> list[UsageRecord]:
    db.session.remove()
    return list(db.session.scalars(select(UsageRecord).order_by(UsageRecord.id)))


def only_record() -> UsageRecord:
    found = records()
    assert len(found) == 1, f"expected exactly one usage record, found {len(found)}"
    return found[0]
