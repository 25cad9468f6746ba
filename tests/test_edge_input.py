"""Strings that get recorded are bounded and clean at the edge, bodies have a bounded shape, and lookups take
only the gateway's own id form: each a clear 400 naming the field, never a 500 or a poisoned usage record."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.gateway.schema import MAX_DEPTH, MAX_MODEL
from app.models import UsageRecord
from simulators.server import Fault
from tests.helpers import MESSAGES, byok, chat, only_record, records

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def post_raw(client, key: str, data: bytes):
    return client.post("/v1/chat/completions", data=data,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def assert_400(response, param: str, *words: str) -> dict:
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["param"] == param and error["code"] == "invalid_request", error
    for word in words:
        assert word in error["message"], error["message"]
    return error


# -- recorded strings: model and label ------------------------------------------------------------------
def test_the_model_bound_is_the_usage_column_width():
    assert MAX_MODEL == UsageRecord.__table__.c.model.type.length


@pytest.mark.parametrize("model, words", [
    ("openai/" + "m" * 300, ("longer than",)),
    ("m" * (MAX_MODEL + 1), ("longer than",)),
    ("gpt-4o\x00mini", ("NUL",)),
    ("openai/gpt-4o\x00", ("NUL",)),
    ("gpt-4o\nmini", ("control character",)),
    ("gpt\x1b[31m-4o", ("control character",)),
    ("gpt-4o\x7f", ("control character",)),
])
def test_an_unrecordable_model_is_a_400_and_records_nothing_from_it(client, gateway_key, fake_openai, model, words):
    response = chat(client, gateway_key, model=model, byok_conf=byok("sk-model-test"))
    assert_400(response, "model", *words)
    assert fake_openai.received == []
    assert only_record().model == ""


@FAST
@given(model=st.text(min_size=1, max_size=200))
def test_any_model_name_is_either_refused_or_recorded_as_sent(client, gateway_key, fake_openai, model):
    fake_openai.reset()
    response = chat(client, gateway_key, model=model, byok_conf=byok("sk-model-fuzz", fallback=False))
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code == 400 and response.get_json()["error"]["param"] == "model":
        return
    recorded = records()[-1].model
    assert len(recorded) <= MAX_MODEL and "\x00" not in recorded


@pytest.mark.parametrize("label, words", [
    ("x" * 65, ("at most 64",)),
    ("team\x00a", ("NUL",)),
    ("team\na", ("control character",)),
    ("team\ta", ("control character",)),
    (42, ("must be a string",)),
])
def test_an_unrecordable_label_is_a_400_naming_the_entry(client, gateway_key, fake_openai, label, words):
    conf = [byok("sk-label-test"), byok("sk-label-test-2", label=label)]
    assert_400(chat(client, gateway_key, byok_conf=conf), "byok_conf[1].label", *words)
    assert fake_openai.received == []
    assert only_record().byok_label == ""


def test_a_clean_label_of_64_characters_is_recorded(client, gateway_key):
    label = "équipe-α " + "x" * 55
    assert chat(client, gateway_key, byok_conf=byok("sk-label-ok", label=label)).status_code == 200
    assert only_record().byok_label == label


@pytest.mark.parametrize("conf, param", [
    ({"provider": "open\x00ai", "credentials": {"api_key": "k"}}, "byok_conf.provider"),
    ({"provider": "openai", "credentials": {"api_key": "k", "x\x00\n" * 30: "v"}}, "byok_conf.credentials"),
])
def test_echoed_names_are_bounded_and_clean(client, gateway_key, conf, param):
    error = assert_400(chat(client, gateway_key, byok_conf=conf), param)
    assert "\x00" not in error["message"] and "\n" not in error["message"] and len(error["message"]) < 400


# -- the body's shape ---------------------------------------------------------------------------------------
def nested(levels: int, leaf: bytes = b"1") -> bytes:
    """`levels` objects, one inside the other."""
    return b'{"a":' * levels + leaf + b"}" * levels


@pytest.mark.parametrize("where", ["metadata", "response_format", "tools", "messages", "byok_conf"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 1023, 2000])
def test_a_deeply_nested_body_is_a_400(client, gateway_key, fake_openai, where, depth):
    value = nested(depth - 1)
    body = {"model": b'"openai/gpt-4o-mini"', "messages": orjson.dumps(MESSAGES), where: value}
    raw = b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in body.items()) + b"}"
    assert_400(post_raw(client, gateway_key, raw), None, f"nested more than {MAX_DEPTH} levels")
    assert fake_openai.received == []


def test_nesting_at_the_limit_passes_the_edge(client, gateway_key, fake_openai):
    raw = b'{"model":"openai/gpt-4o-mini","messages":' + orjson.dumps(MESSAGES) + b',"metadata":' + \
        nested(MAX_DEPTH - 1, b'"leaf"') + b',"byok_conf":' + orjson.dumps(byok("sk-depth")) + b"}"
    assert post_raw(client, gateway_key, raw).status_code == 200
    assert len(fake_openai.received) == 1


@pytest.mark.parametrize("extra, status", [
    (b'"metadata":[' + b",".join([b"0"] * 10000) + b"]", 200),        # a wide array is fine
    (b'"metadata":{"k":"' + b"x" * 4_000_000 + b'"}', 200),            # so is a long string under the body limit
    (b'"temperature":1e400', 400),                                     # not a finite number
    (b'"max_tokens":123456789012345678901234567890', 400),             # not an integer any provider takes
    (b'"model":"openai/gpt-4o","model":"openai/gpt-4o-mini"', 200),    # a duplicate key: the last one wins
])
def test_other_size_classes_never_reach_a_500(client, gateway_key, fake_openai, extra, status):
    raw = b'{"messages":' + orjson.dumps(MESSAGES) + b',"byok_conf":' + orjson.dumps(byok("sk-size")) + \
        (b',"model":"openai/gpt-4o-mini",' if b'"model"' not in extra else b",") + extra + b"}"
    response = post_raw(client, gateway_key, raw)
    assert response.status_code == status, response.get_data(as_text=True)[:300]


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=40))
def test_any_json_metadata_is_answered_without_a_5xx(client, gateway_key, fake_openai, value):
    response = chat(client, gateway_key, metadata=value, byok_conf=byok("sk-meta", fallback=False))
    assert response.status_code < 500


def test_a_deeply_nested_upstream_answer_is_a_malformed_response(client, gateway_key, fake_openai):
    body = b'{"id":"x","object":"chat.completion","created":1,"model":"m","extra":' + nested(400) + \
        b',"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}'
    fake_openai.next(Fault("status", 200, body=body))
    response = chat(client, gateway_key, byok_conf=byok("sk-deep-answer", fallback=False))
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "malformed_response"


def test_deeply_nested_tool_arguments_are_a_400(client, gateway_key):
    arguments = nested(300).decode()
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": "c1", "content": arguments}]
    response = chat(client, gateway_key, model="gemini-2.5-pro", messages=messages,
                    byok_conf={"provider": "gemini", "credentials": {"api_key": "k-gem"}})
    assert_400(response, "messages[1].tool_calls[0].function.arguments", "nested")


# -- /v1/generation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["id=gen-" + "f" * 80, "id=gen-XYZ", "id=../gen-abc", "id=gen-abc%20", "id=%C3%A9"])
def test_a_generation_id_of_the_wrong_shape_is_a_400(client, gateway_key, query):
    response = client.get(f"/v1/generation?{query}", headers={"Authorization": f"Bearer {gateway_key}"})
    error = assert_400(response, "id", "gen-")
    assert len(error["message"]) < 200


# NUL, control characters and over-long values never reach the view: the request edge answers them.
@pytest.mark.parametrize("query", ["id=%00", "id=gen-%00", "id=gen-abc%0a", "id=" + "a" * 5000])
def test_a_generation_id_the_edge_refuses_is_a_400_naming_it(client, gateway_key, query):
    response = client.get(f"/v1/generation?{query}", headers={"Authorization": f"Bearer {gateway_key}"})
    error = assert_400(response, "id")
    assert "\x00" not in error["message"] and len(error["message"]) < 200


def test_a_well_formed_unknown_generation_id_is_a_404(client, gateway_key):
    response = client.get("/v1/generation?id=gen-" + "0" * 24, headers={"Authorization": f"Bearer {gateway_key}"})
    assert response.status_code == 404 and response.get_json()["error"]["param"] == "id"


@FAST
@given(st.text(max_size=60))
def test_any_generation_id_is_answered_without_a_5xx(client, gateway_key, value):
    response = client.get("/v1/generation", query_string={"id": value},
                          headers={"Authorization": f"Bearer {gateway_key}"})
    assert response.status_code in (400, 404)
