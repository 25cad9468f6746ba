"""The canary sweep for Bedrock: the AWS secret key, session token and key id reach no sink."""
from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from tests.canary import LogCapture, assert_nowhere
from tests.factories import grant
from simulators.bedrock import aws_fault, stream_exception
from simulators.server import Fault
from tests.test_provider_bedrock_gateway import (  # noqa: F401  (fixtures)
    MODEL, SHARED_AKID, _bedrock_server, app_config, fake_bedrock,
)

CANARY_AKID = "ASIA0W2PQWST26AFC4M1"
CANARY_SECRET = "J7HTvW8cmMmc20YAdGiY/PjYJUvGlwWd+xf4AnXs"
CANARY_TOKEN = "IQoJb3JpZ2luX2VjLGRx18p505OJ15k3VVfqR2pXTJP0dUkoSqKTE0COpD5ECfLUDrLkqi21"
CANARY_AKID_WRONG = "ASIA6YZHH9BSFN4NG6KS"  # registered with another secret: a signature mismatch


def canary_byok(akid: str = CANARY_AKID, **extra: Any) -> dict[str, Any]:
    return {"provider": "bedrock", "label": "canary", "credentials": {
        "aws_access_key_id": akid, "aws_secret_access_key": CANARY_SECRET, "aws_session_token": CANARY_TOKEN,
        "region": "us-east-1"}, **extra}


def echo(error_type: str) -> Fault:
    """An error whose message echoes the credentials, as a careless upstream might."""
    return aws_fault(error_type, message=f"denied for {CANARY_AKID} {CANARY_SECRET} token {CANARY_TOKEN}")


def test_bedrock_credentials_reach_no_sink(app, client, org, gateway_key, fake_bedrock):
    fake_bedrock.add_key(CANARY_AKID, CANARY_SECRET, session_token=CANARY_TOKEN)
    fake_bedrock.add_key(CANARY_AKID_WRONG, "another-secret", session_token=CANARY_TOKEN)
    grant(org, "10")
    responses: list[str] = []

    def call(byok_conf: Any, **body: Any) -> None:
        payload = {"model": f"bedrock/{MODEL}", "messages": [{"role": "user", "content": "Hello"}],
                   "byok_conf": byok_conf, **body}
        response = client.post("/v1/chat/completions", data=orjson.dumps(payload),
                               headers={"Authorization": f"Bearer {gateway_key}"})
        text = response.get_data(as_text=True)
        responses.append(f"{response.status_code} {dict(response.headers)} {text}")
        request_id = response.headers.get("X-Request-Id")
        lookup = client.get(f"/v1/generation?id={request_id}", headers={"Authorization": f"Bearer {gateway_key}"})
        responses.append(lookup.get_data(as_text=True))

    with LogCapture() as logs:
        call(canary_byok())
        call(canary_byok(), stream=True, stream_options={"include_usage": True})
        fake_bedrock.on_key(CANARY_AKID, echo("ThrottlingException"))
        call(canary_byok())
        call(canary_byok(), stream=True)
        fake_bedrock.on_key(CANARY_AKID, echo("AccessDeniedException"))
        call(canary_byok())
        fake_bedrock.on_key(CANARY_AKID, stream_exception("InternalServerException", after_events=2))
        call(canary_byok(), stream=True)
        fake_bedrock.on_key(CANARY_AKID, None)
        call(canary_byok(CANARY_AKID_WRONG))
        call(canary_byok(), response_format={"type": "json_object"})
        bad_region = canary_byok()
        bad_region["credentials"]["region"] = "nowhere"
        call(bad_region)
        call([canary_byok(fallback=False), canary_byok()])

    statuses = [r.split(" ", 1)[0] for r in responses[::2]]
    assert statuses == ["200", "200", "200", "200", "401", "200", "401", "400", "400", "200"], statuses
    assert any(SHARED_AKID in r.headers.get("authorization", "") for r in fake_bedrock.received)
    for canary in (CANARY_SECRET, CANARY_TOKEN, CANARY_AKID):
        assert_nowhere(canary, logs=logs, responses=responses, instance_path=app.instance_path)


@pytest.mark.parametrize("level_name", ["botocore.auth", "botocore"])
def test_botocore_signing_debug_lines_are_dropped(level_name, app, client, gateway_key, fake_bedrock):
    """botocore logs the canonical request (session token included) at DEBUG; app/logs.py withholds it."""
    fake_bedrock.add_key(CANARY_AKID, CANARY_SECRET, session_token=CANARY_TOKEN)
    logging.getLogger(level_name).setLevel(logging.DEBUG)
    try:
        with LogCapture() as logs:
            client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {gateway_key}"},
                        data=orjson.dumps({"model": f"bedrock/{MODEL}", "byok_conf": canary_byok(),
                                           "messages": [{"role": "user", "content": "Hi"}]}))
    finally:
        logging.getLogger(level_name).setLevel(logging.NOTSET)
    assert CANARY_TOKEN[:20] not in logs.text()
    assert logs.lines
