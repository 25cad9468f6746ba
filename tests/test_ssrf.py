"""SSRF: no caller-supplied value makes the gateway connect to an address the caller chose.

Every provider field that shapes a URL (Azure endpoint, deployment, api_version; Vertex region and
project_id; Bedrock region; the model where it lands in a path) is tried with crafted values. "0
connections" is proven twice: real listening sockets on 127.0.0.1 and ::1 count accepts, and a spy
on socket.getaddrinfo/connect sees no lookup or connect at all. The settings are as permissive as an
operator can make them (the listeners' ports allowed, private upstreams allowed, every name
resolving to a listener), so only the edge checks stand between a crafted value and a connection.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from urllib.parse import unquote, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from app import create_app
from app.gateway import outbound
from app.gateway.errors import ConfigurationError, InvalidRequest
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials
from app.gateway.schema import parse_chat_request
from app.validation import TextRejected
from simulators.openai import FakeOpenAI
from tests.conftest import base_config
from tests.helpers import chat

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DB_PORT = 5432


# -- the witnesses: listeners that count accepts, and a spy on lookups and connects ------------------------
class Listener:
    def __init__(self, family: int, host: str):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            conn.close()


@pytest.fixture(scope="module")
def listeners():
    v4 = Listener(socket.AF_INET, "127.0.0.1")
    v6 = Listener(socket.AF_INET6, "::1") if socket.has_ipv6 else None
    yield v4, v6
    for listener in (v4, v6):
        if listener:
            listener.sock.close()


class Spy:
    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.connects: list[tuple] = []

    def outbound(self) -> list:
        return [c for c in self.connects if c[1] != DB_PORT] + [h for h in self.lookups]


@contextlib.contextmanager
def spying(monkeypatch, block_egress: bool = False):
    spy = Spy()
    real_lookup, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def lookup(host, port, *args, **kwargs):
        if port != DB_PORT:
            spy.lookups.append(host)
        return real_lookup(host, port, *args, **kwargs)

    def connect(sock, address):
        spy.connects.append(tuple(address[:2]))
        if block_egress and not ipaddress.ip_address(address[0]).is_loopback:
            raise ConnectionRefusedError("egress blocked by the test")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        spy.connects.append(tuple(address[:2]))
        return real_connect_ex(sock, address)

    with monkeypatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", lookup)
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield spy


@pytest.fixture
def app_config(app_config, listeners):
    v4, v6 = listeners
    ports = ",".join(str(p) for p in ("443", v4.port, v6.port if v6 else None) if p)
    config = {k: v for k, v in app_config.items() if k != "GATEWAY_AZURE_BASE_URL"}
    return {**config, "GATEWAY_AZURE_ALLOWED_PORTS": ports, "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": True}


@pytest.fixture
def resolve_to_listener(monkeypatch):
    """Every name a check lets through resolves to the IPv4 listener: a slip would be counted there."""
    calls: list[str] = []

    def resolve(host, port):
        calls.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(outbound, "resolve", resolve)
    return calls


# -- crafted values, per field ------------------------------------------------------------------------------
def endpoints(p4: int, p6: int) -> list[str]:
    ok = "x.openai.azure.com"
    return [
        f"https://127.0.0.1:{p4}\\@{ok}", f"https://127.0.0.1:{p4}\\{ok}", f"https://{ok}\\@127.0.0.1:{p4}",
        f"https://[::1]:{p6}\\@{ok}", f"https://[::1]:{p6}/", f"https://[::1]:{p6}@{ok}", f"https://127.0.0.1:{p4}",
        f"https://2130706433:{p4}", f"https://0x7f000001:{p4}", f"https://0177.0.0.1:{p4}", f"https://127.1:{p4}",
        f"https://0x7f.1:{p4}", f"https://017700000001:{p4}", f"https://[::ffff:127.0.0.1]:{p4}",
        f"https://[::ffff:7f00:1]:{p4}", f"https://[0:0:0:0:0:0:0:1]:{p6}", f"https://[fe80::1%25lo]:{p6}",
        f"https://{ok}.127.0.0.1:{p4}", f"https://user:pass@{ok}:{p4}", f"https://127.0.0.1:{p4}@{ok}",
        f"https://{ok}@127.0.0.1:{p4}", f"https://{ok}%40127.0.0.1:{p4}", f"https://x%2eopenai.azure.com:{p4}",
        f"https://127.0.0.1%2f.openai.azure.com:{p4}", f"https://%78.openai.azure.com:{p4}",
        f"https://{ok} :{p4}", f" https://{ok}:{p4}", f"https://{ok}:{p4}\r\nHost: 127.0.0.1", f"https://{ok}:{p4}\n",
        f"https://x\tb.openai.azure.com:{p4}", f"https://{ok}:{p4}/\x00", f"https://x。openai。azure。com:{p4}",
        f"https://x．openai．azure．com:{p4}", f"https://x.openai.azure.com．127.0.0.1:{p4}",
        f"https://ⅹ.openai.azure.com:{p4}", f"https://x.оpenai.azure.com:{p4}", f"https://x\u200b.openai.azure.com:{p4}",
        f"https://{ok}.:{p4}", f"https://{ok}..:{p4}", f"https://a.b.openai.azure.com:{p4}",
        f"https://.openai.azure.com:{p4}", f"https://openai.azure.com:{p4}", f"https://{ok}.evil.example:{p4}",
        f"https://xopenai.azure.com:{p4}", f"https://{ok}:{p4}/path", f"https://{ok}:{p4}/?q=1", f"https://{ok}:{p4}?",
        f"https://{ok}:{p4}#frag", f"https://{ok}:{p4}/openai/../../", f"https://{ok}:{p4}//", f"http://{ok}:{p4}",
        f"HTTPS://{ok}:{p4}", f"https://{ok}:{p4 + 1}", f"https://{ok}:0{p4}", f"https://{ok}:+{p4}",
        f"https://{ok}:{p4}:{p4}", f"https://{ok}:", f"https://{ok}:99999", f"https://{'a' * 64}.openai.azure.com:{p4}",
        f"https://-x.openai.azure.com:{p4}", f"https://x-.openai.azure.com:{p4}", f"https://x_y.openai.azure.com:{p4}",
        f"https://xn--.openai.azure.com:{p4}", f"https://xn--zz-zzz.openai.azure.com:{p4}", f"//{ok}:{p4}",
        f"https:/{ok}:{p4}", f"https:\\\\{ok}:{p4}", ok, f"https://localhost:{p4}", f"https://127.0.0.1.nip.io:{p4}",
        f"https://{ok}:{p4}/ ", "https://", "https://" + "a" * 5000, f"https://[{ok}]:{p4}", 42, ["https://" + ok],
    ]


FIELD_VALUES = {
    "deployment": ["..", ".", "../x", "a/b", "a/../b", "./a", "a\\b", "a?b", "a#b", "a%2fb", "%2e%2e", "a b", "a\nb",
                   "a\r\nHost: x", "a\x00", "é", "a\u2028", "x" * 65, "", "-", "@x", "a@b", "a:b", "a;b", "a,b", "a=b",
                   "a&b", "a+b", "a~b", "a'b", 'a"b', "a<b", "a>b", "a{b}", "a|b", "a^b", "a`b", "a[b]", "a$b", "a!b",
                   "a*b", "a(b)", "ａ", "аzure", "a\tb", "\ufeffa", "a\x7f", 123, ["a"], {"a": 1}, True],
    "api_version": ["2024-10-21&x=1", "2024-10-21#", "2024-10-21/../", "2024-10-21\n", "../", "2024-10-21 ",
                    " 2024-10-21", "2024/10/21", "2024-10-21?x", "2024-10-21%26", "x", "2024-1-21", "20241021",
                    "2024-10-21-", "2024-10-21-PREVIEW", "2024-10-21-preview2", "١٢٣٤-10-21", "２０２４-10-21",
                    "2024-10-21\x00", "2024-10-21\u2028", "latest&a=b", "preview/", "2024-10-21@x", "2024-10-21;x",
                    "2024-10-21\\", "2024-10-21:443", "2024-10-21-preview-x", "2024-10-21+x", "2024.10.21",
                    "2024-10-21\r\nX: y", "\t2024-10-21", "2024-10-2l", "LATEST", "2024-10-21-preview/..",
                    "%32024-10-21", "2024-10-21/", "a" * 100, 2024, ["2024-10-21"], {"v": 1}, False],
}
REGIONS = ["us-central1.evil.com", "us-central1/", "us-central1\n", "US-CENTRAL1", "us-central1:443", "us-central1@evil",
           "evil.com#", "127.0.0.1", "localhost", "us-central1-", "-us-central1", "us_central1", "us-central",
           "global.", "global/", "us-central1%2f", "us-central1 ", " us-central1", "ｕs-central1", "us-cеntral1",
           "us-central１", "us-central٣", "us-central12345", "us-central1\\", "us-central1?x", "us-central1#x",
           "..", ".", "../us-central1", "us-central1/../x", "us-central1\x00", "us-central1\u2028", "us-east-1.",
           "us-" + "a" * 300 + "-1", "", "[::1]", "2130706433", "us-central1.", "us\tcentral1", "us-central1\r\n",
           "eu-west-1a", "us-east-1/", 1, ["us-central1"], {"r": 1}, True]
PROJECTS = ["proj/../x", "proj-123/locations", "proj-123?x", "proj-123#", "PROJ-123", "proj_123", "proj 123",
            "proj\n123", "proj-123\n", "p", "a" * 40, "-proj-123", "proj-123-", "1proj-123", "proj-123%2f",
            "proj-123@x", "proj-123:443", ".", "..", "../..", "proj-１２３", "prоj-123", "", "proj-123\\x",
            "proj-123\x00", "proj-123\u2028", "proj-123/", "/proj-123", "proj-123;x", "proj-123&x", "proj-123=x",
            "proj-123 ", " proj-123", "proj-123\t", "example.com:", ":proj-123", "example..com:proj-123",
            "proj-123.", "proj.123", "١٢٣٤٥٦", "%70roj-123", 12345, ["proj-123"], {"p": 1}, True]
MODELS = ["..", ".", "../gemini-pro", "..%2fx", "gemini/../../x", "a/./b", "a//b", "/gemini", "gemini/", "a\\b",
          "a?alt=json", "a#x", "a%00", "a%2e%2e", "a b", "a;b", "a,b", "a=b", "a&b", "a~b", "a'b", 'a"b', "a<b",
          "a>b", "a{b", "a|b", "a^b", "a`b", "a[b", "a$b", "a!b", "a*b", "a(b", "é", "gemini-ｐro", "gеmini",
          "a\u200bb", "\ufeffa", "-a", "_a", ":a", "@a", "a\x00b", "a\nb", "a\x1bb", "x" * 200]


def vertex_conf(**credentials):
    return {"provider": "vertex", "credentials": {"project_id": "proj-123456", "region": "us-central1",
                                                  "access_token": "ya29.token", **credentials}}


def bedrock_conf(**credentials):
    return {"provider": "bedrock", "credentials": {"aws_access_key_id": "AKIATESTKEY000000001",
                                                   "aws_secret_access_key": "secret", "region": "us-east-1",
                                                   **credentials}}


def azure_conf(port: int, **credentials):
    return {"provider": "azure", "credentials": {"api_key": "az-key", "endpoint": f"https://myres.openai.azure.com:{port}",
                                                 "api_version": "2024-10-21", "deployment": "dep", **credentials}}


def cases(listeners) -> dict[str, list[tuple[str, dict, str]]]:
    """field -> [(model, byok_conf, the param the 400 must name)]."""
    v4, v6 = listeners
    p6 = v6.port if v6 else v4.port
    where = "byok_conf.credentials"
    out = {
        "azure.endpoint": [("gpt-4o", azure_conf(v4.port, endpoint=e), f"{where}.endpoint") for e in endpoints(v4.port, p6)],
        "vertex.region": [("gemini-2.5-pro", vertex_conf(region=r), f"{where}.region") for r in REGIONS],
        "vertex.project_id": [("gemini-2.5-pro", vertex_conf(project_id=p), f"{where}.project_id") for p in PROJECTS],
        "bedrock.region": [("anthropic.claude-v2", bedrock_conf(region=r), f"{where}.region") for r in REGIONS],
    }
    for name, values in FIELD_VALUES.items():
        out[f"azure.{name}"] = [("gpt-4o", azure_conf(v4.port, **{name: v}), f"{where}.{name}") for v in values]
    out["model (azure deployment)"] = [(m, azure_conf(v4.port, deployment=None), "model") for m in MODELS]
    out["model (gemini)"] = [(m, {"provider": "gemini", "credentials": {"api_key": "k"}}, "model") for m in MODELS]
    out["model (vertex)"] = [(m, vertex_conf(), "model") for m in MODELS]
    out["model (bedrock)"] = [(m, bedrock_conf(), "model") for m in MODELS]
    return out


FIELDS = ["azure.endpoint", "azure.deployment", "azure.api_version", "vertex.region", "vertex.project_id",
          "bedrock.region", "model (azure deployment)", "model (gemini)", "model (vertex)", "model (bedrock)"]


@pytest.mark.parametrize("field", FIELDS)
def test_crafted_url_values_are_400_with_no_connection_anywhere(client, gateway_key, listeners, resolve_to_listener,
                                                               monkeypatch, field):
    crafted = cases(listeners)[field]
    assert len(crafted) >= 40
    before = [listener.accepts for listener in listeners if listener]
    wrong = []
    with spying(monkeypatch) as spy:
        for model, conf, param in crafted:
            response = chat(client, gateway_key, model=model, byok_conf=conf)
            error = (response.get_json() or {}).get("error") or {}
            if response.status_code != 400 or error.get("param") != param:
                wrong.append((conf["credentials"], model, response.status_code, error.get("param")))
    assert wrong == []
    assert spy.outbound() == [] and resolve_to_listener == []
    assert [listener.accepts for listener in listeners if listener] == before


# -- the same classes, generated ----------------------------------------------------------------------------
def _ipv4_notations(ip: ipaddress.IPv4Address) -> list[str]:
    a, b, c, d = ip.packed
    n = int(ip)
    return [str(ip), str(n), hex(n), "0" + oct(n)[2:], f"{a}.{(b << 16) | (c << 8) | d}", f"{a}.{b}.{(c << 8) | d}",
            f"0{a:o}.0{b:o}.0{c:o}.0{d:o}", f"{a:#x}.{b:#x}.{c:#x}.{d:#x}", f"[::ffff:{ip}]", f"[::ffff:{n >> 16:x}:{n & 0xffff:x}]"]


_IP_HOSTS = st.one_of(
    st.ip_addresses(v=4).flatmap(lambda ip: st.sampled_from(_ipv4_notations(ip))),
    st.ip_addresses(v=6).flatmap(lambda ip: st.sampled_from([f"[{ip.compressed}]", f"[{ip.exploded}]"])),
)
_TRICKS = st.sampled_from(["{ip}", "{ip}\\@x.openai.azure.com", "{ip}\\x.openai.azure.com", "x.openai.azure.com@{ip}",
                           "{ip}@x.openai.azure.com", "{ip}%2f.openai.azure.com", "{ip}#.openai.azure.com",
                           "{ip}/.openai.azure.com", "{ip}?.openai.azure.com", "{ip}.x.openai.azure.com"])


@FAST
@given(host=_IP_HOSTS, trick=_TRICKS, port=st.booleans())
def test_an_ip_literal_in_any_notation_is_refused(listeners, host, trick, port):
    value = "https://" + trick.format(ip=host) + (f":{listeners[0].port}" if port else "")
    rules = outbound.HostRules(("*.openai.azure.com",), frozenset({443, listeners[0].port}))
    with pytest.raises(TextRejected):
        outbound.parse_origin(value, rules)


_FORBIDDEN = st.sampled_from(list("\\@%#?[]:;,*!$&'()+=~_\"<>{}|^` \t\n\r\x00\x7f") +
                             ["。", "．", "｡", "\u200b", "\u2028", "é", "ⅹ", "о", "\ufeff", "%2e", "%40", ".."])


@FAST
@given(position=st.integers(min_value=0), inserted=_FORBIDDEN)
def test_any_forbidden_character_anywhere_in_a_valid_endpoint_is_refused(listeners, position, inserted):
    valid = f"https://x.openai.azure.com:{listeners[0].port}"
    at = position % (len(valid) + 1)
    value = valid[:at] + inserted + valid[at:]
    rules = outbound.HostRules(("*.openai.azure.com",), frozenset({443, listeners[0].port}))
    with pytest.raises(TextRejected):
        outbound.parse_origin(value, rules)


_CRAFTED_ENDPOINT = st.one_of(
    st.builds(lambda host, trick, port: "https://" + trick.format(ip=host) + port, _IP_HOSTS, _TRICKS,
              st.sampled_from(["", ":{p4}", ":{p6}"])),
    st.builds(lambda at, inserted: (at, inserted), st.integers(min_value=0), _FORBIDDEN),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crafted=_CRAFTED_ENDPOINT)
def test_generated_endpoints_are_400_with_no_connection_anywhere(client, gateway_key, listeners, resolve_to_listener,
                                                                 monkeypatch, crafted):
    v4, v6 = listeners
    ports = {"p4": v4.port, "p6": v6.port if v6 else v4.port}
    if isinstance(crafted, tuple):  # a forbidden character inserted anywhere in a valid endpoint
        valid = f"https://x.openai.azure.com:{v4.port}"
        at = crafted[0] % (len(valid) + 1)
        endpoint = valid[:at] + crafted[1] + valid[at:]
    else:
        endpoint = crafted.replace("{p4}", str(ports["p4"])).replace("{p6}", str(ports["p6"]))
    before = [listener.accepts for listener in listeners if listener]
    with spying(monkeypatch) as spy:
        response = chat(client, gateway_key, model="gpt-4o", byok_conf=azure_conf(v4.port, endpoint=endpoint))
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "byok_conf.credentials.endpoint"
    assert spy.outbound() == [] and resolve_to_listener == []
    assert [listener.accepts for listener in listeners if listener] == before


_URLISH = st.text(alphabet=st.sampled_from(list("hts:/@\\[]%.-_0123456789xaopenizurcm#?") + [" ", "\t", "é", "。"]),
                  max_size=60)


@settings(max_examples=400, deadline=None)
@given(tail=_URLISH, prefix=st.sampled_from(["https://", "https://x.openai.azure.com", "", "https://x"]))
def test_an_accepted_endpoint_means_the_same_host_to_every_parser(prefix, tail):
    value = prefix + tail
    rules = outbound.HostRules(("*.openai.azure.com",), frozenset({443, 8443}))
    try:
        origin = outbound.parse_origin(value, rules)
    except TextRejected:
        return
    assert rules.allows_host(origin.host) and origin.port in (443, 8443)
    for url in (value, origin.url()):
        assert parse_url(url).host == origin.host and (parse_url(url).port or 443) == origin.port
        assert urlsplit(url).hostname == origin.host and (urlsplit(url).port or 443) == origin.port


_REGION_LIKE = st.one_of(st.text(max_size=40), st.sampled_from(REGIONS[:40]),
                        st.from_regex(r"[a-z]{2,8}-[a-z]{2,8}[0-9]{1,2}", fullmatch=True),
                        st.from_regex(r"[a-z]{2}-[a-z]{2,8}-[0-9]", fullmatch=True))
_MODEL_LIKE = st.one_of(st.text(min_size=1, max_size=60), st.sampled_from(MODELS),
                        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,30}", fullmatch=True))
_REQUEST = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def _model_segment(path: str, after: str, before: str) -> str:
    return unquote(path.split(after, 1)[1].rsplit(before, 1)[0])


def _built(provider_id: str, creds: Credentials, model: str):
    """The upstream request for checked credentials and model, or None when either is refused."""
    try:
        REGISTRY[provider_id].check_credentials(creds, {})
        return REGISTRY[provider_id].build_request(_REQUEST, model, creds, None)
    except InvalidRequest:
        return None


@FAST
@given(region=_REGION_LIKE, model=_MODEL_LIKE, project=st.one_of(
    st.text(max_size=40), st.from_regex(r"[a-z][a-z0-9-]{4,10}[a-z0-9]", fullmatch=True)))
def test_vertex_urls_have_the_host_and_path_their_checked_parts_say(region, project, model):
    upstream = _built("vertex", Credentials({"project_id": project, "region": region, "access_token": "t"}), model)
    if upstream is None:
        return
    url = parse_url(upstream.url)
    assert url.host == ("aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com")
    assert urlsplit(upstream.url).hostname == url.host
    publisher = "anthropic" if model.startswith("claude") else "google"
    assert url.path.startswith(f"/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/")
    assert _model_segment(url.path, "/models/", ":") == model


@FAST
@given(region=_REGION_LIKE, model=_MODEL_LIKE)
def test_bedrock_urls_have_the_host_and_path_their_checked_parts_say(region, model):
    creds = Credentials({"aws_access_key_id": "AKIATESTKEY000000001", "aws_secret_access_key": "s", "region": region})
    upstream = _built("bedrock", creds, model)
    if upstream is None:
        return
    url = parse_url(upstream.url)
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    assert url.host == f"bedrock-runtime.{region}.{suffix}" and urlsplit(upstream.url).hostname == url.host
    assert url.path.count("/") == 3 and _model_segment(url.path, "/model/", "/") == model


# -- the address a name resolves to ------------------------------------------------------------------------
NON_PUBLIC = ["127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
              "0.0.0.0", "0.1.2.3", "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1", "::1", "::",
              "fe80::1", "fe80::1%lo", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
              "::ffff:169.254.169.254", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a00:1::1",
              "2001:0:4136:e378:8000:63bf:3fff:fdd2", "::7f00:1"]
_NON_PUBLIC_NETS = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
                    "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7", "ff00::/8"]


class TestAddressPolicy:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "false"}  # as the environment gives it

    def test_a_name_resolving_to_any_non_public_address_is_refused(self, client, gateway_key, listeners, monkeypatch):
        answers: list[list[str]] = [[a] for a in NON_PUBLIC] + [["8.8.8.8", a] for a in NON_PUBLIC[:6]]
        wrong = []
        with spying(monkeypatch) as spy:
            for answer in answers:
                monkeypatch.setattr(outbound, "resolve", lambda host, port, answer=answer: list(answer))
                response = chat(client, gateway_key, model="gpt-4o", byok_conf=azure_conf(listeners[0].port))
                error = response.get_json()["error"]
                if response.status_code != 400 or error["param"] != "byok_conf.credentials.endpoint" \
                        or "non-public" not in error["message"]:
                    wrong.append((answer, response.status_code))
        assert wrong == [] and spy.outbound() == []

    @FAST
    @given(address=st.sampled_from(_NON_PUBLIC_NETS).flatmap(
        lambda net: st.ip_addresses(network=net)))
    def test_any_address_in_a_non_public_range_is_refused(self, address):
        assert outbound.refused(str(address), allow_private=False)

    def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(self, client, gateway_key, monkeypatch):
        resolved: list[str] = []

        def resolve(host, port):
            resolved.append(host)
            return ["8.8.8.8"]  # public: allowed; the test's spy refuses the actual connect

        monkeypatch.setattr(outbound, "resolve", resolve)
        with spying(monkeypatch, block_egress=True) as spy:
            response = chat(client, gateway_key, model="gpt-4o", byok_conf=azure_conf(443, endpoint="https://myres.openai.azure.com/"))
        assert response.status_code == 502 and response.get_json()["error"]["code"] == "connection"
        assert resolved == ["myres.openai.azure.com"]
        assert "myres.openai.azure.com" not in spy.lookups
        assert spy.connects == [("8.8.8.8", 443)]


def test_a_private_address_is_allowed_only_when_the_operator_opts_in():
    assert outbound.refused("10.1.2.3", allow_private=False) and not outbound.refused("10.1.2.3", allow_private=True)
    assert outbound.refused("127.0.0.1", allow_private=False) and not outbound.refused("::1", allow_private=True)
    for never in ("169.254.169.254", "0.0.0.0", "224.0.0.1", "::", "ff02::1", "fe80::1"):
        assert outbound.refused(never, allow_private=True)
    for public in ("8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert not outbound.refused(public, allow_private=False)


# -- the positive path: a resolvable allowed name, connected by checked address, over TLS ---------------------
def _tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Keyway test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=36500))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "myres")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=36500))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("myres.openai.azure.com")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "leaf.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return folder


@pytest.fixture(scope="module")
def tls_azure(tmp_path_factory):
    """The fake Azure server from simulators/, behind TLS with a certificate for myres.openai.azure.com."""
    folder = _tls_files(tmp_path_factory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    server_names: list[str] = []
    context.sni_callback = lambda sslobj, name, ctx: server_names.append(name)
    fake = FakeOpenAI(flavor="azure")
    fake.httpd.socket = context.wrap_socket(fake.httpd.socket, server_side=True)
    fake.start()
    yield fake, server_names, str(folder / "ca.pem")
    fake.stop()


class TestPinnedConnection:
    @pytest.fixture
    def app_config(self, app_config, tls_azure):
        fake, _, ca = tls_azure
        return {**app_config, "GATEWAY_AZURE_ALLOWED_PORTS": f"443,{fake.port}", "UPSTREAM_CA_BUNDLE": ca,
                "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "true"}

    def test_an_allowed_name_connects_to_exactly_the_checked_address_with_its_name(self, client, gateway_key,
                                                                                  tls_azure, monkeypatch):
        fake, server_names, _ = tls_azure
        fake.reset()
        server_names.clear()
        resolved: list[tuple[str, int]] = []

        def resolve(host, port):
            resolved.append((host, port))
            return ["127.0.0.1"]

        monkeypatch.setattr(outbound, "resolve", resolve)
        conf = azure_conf(fake.port, endpoint=f"https://MyRes.OpenAI.Azure.com:{fake.port}/", deployment="prod-4o")
        with spying(monkeypatch) as spy:
            response = chat(client, gateway_key, model="gpt-4o", byok_conf=conf)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert resolved == [("myres.openai.azure.com", fake.port)]
        assert spy.connects == [("127.0.0.1", fake.port)]
        assert "myres.openai.azure.com" not in spy.lookups
        sent = fake.received[-1]
        assert sent.headers["host"] == f"myres.openai.azure.com:{fake.port}"
        assert server_names == ["myres.openai.azure.com"]
        assert sent.path == "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        assert sent.headers["api-key"] == "az-key"


@pytest.mark.parametrize("setting, value", [
    ("GATEWAY_AZURE_ALLOWED_PORTS", "443,https"), ("GATEWAY_AZURE_ALLOWED_PORTS", "0"),
    ("GATEWAY_AZURE_ALLOWED_PORTS", "70000"), ("GATEWAY_AZURE_ALLOWED_HOSTS", "*.openai..azure.com"),
    ("GATEWAY_AZURE_ALLOWED_HOSTS", "*.openai.azure.com,127.0.0.1"), ("GATEWAY_ALLOW_PRIVATE_UPSTREAMS", "maybe"),
])
def test_an_unusable_outbound_setting_stops_the_app_naming_it(database_url, setting, value):
    with pytest.raises(ConfigurationError) as info:
        create_app(base_config(database_url, **{setting: value}))
    assert str(info.value).startswith(setting)


def test_the_default_resolver_asks_the_system_once_and_returns_each_address_once():
    addresses = outbound.resolve("localhost", 443)
    assert addresses and len(addresses) == len(set(addresses))
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)
