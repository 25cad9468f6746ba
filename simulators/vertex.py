"""A fake Vertex AI endpoint and Google OAuth token endpoint, from the API references.

- `POST /v1/projects/{p}/locations/{r}/publishers/google/models/{m}:generateContent` and
  `:streamGenerateContent?alt=sse` (Gemini behaviour, `role` required, fileData URLs taken);
  `.../publishers/anthropic/models/{m}:rawPredict` and `:streamRawPredict` (Claude behaviour,
  `anthropic_version: vertex-2023-10-16` in the body, no `model` field).
- Every model call needs `Authorization: Bearer <token>` with a token this fake issued or was
  told to accept; anything else is 401 UNAUTHENTICATED.
- `POST /token`: the JWT-bearer grant. The assertion must be an RS256 JWT signed by a
  registered service account's key, with `aud` equal to Google's token endpoint (what Google
  checks, and what google-auth always sends, wherever the request is posted), the
  cloud-platform scope and a live `exp`; it answers `{"access_token", "expires_in", "token_type"}`.
"""
from __future__ import annotations

import base64
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from simulators import anthropic as claude
from simulators import gemini
from simulators.server import Fault, FakeServer, Received, Reject

TOKEN_ENDPOINT = "token-endpoint"  # the credential name faults use to target the token endpoint
PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:]+):(\w+)$")
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCE = "https://oauth2.googleapis.com/token"


class FakeVertex(FakeServer):
    name = "vertex"

    def __init__(self) -> None:
        super().__init__()
        self.token_url = self.url + "/token"
        self.service_accounts: dict[str, Any] = {}  # client_email -> RSA public key
        self.tokens: set[str] = set()
        self.issued: list[str] = []
        self.gemini = gemini.Script()
        self.claude = claude.Script()

    def reset(self) -> None:
        super().reset()
        self.tokens.clear()
        self.issued.clear()
        self.gemini = gemini.Script()
        self.claude = claude.Script()

    def register_service_account(self, client_email: str, public_key: Any) -> None:
        self.service_accounts[client_email] = public_key

    def accept_token(self, token: str) -> None:
        self.tokens.add(token)

    # -- the contract ---------------------------------------------------------------------
    def credential(self, handler) -> str | None:
        if urlsplit(handler.path).path == "/token":
            return TOKEN_ENDPOINT
        auth = handler.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def _fault_for(self, credential: str | None) -> Fault | None:
        if credential == TOKEN_ENDPOINT:  # queued faults are for model calls, not token exchanges
            with self._lock:
                return self._key_faults.get(TOKEN_ENDPOINT)
        return super()._fault_for(credential)

    def error_body(self, status: int, credential: str | None) -> Any:
        if credential == TOKEN_ENDPOINT:
            return {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        return gemini.error_body(status, credential)

    def handle(self, handler, received: Received, fault: Fault | None) -> None:
        if urlsplit(received.path).path == "/token":
            handler.send_json(200, self._grant(received))
            return
        match = PATH.match(urlsplit(received.path).path)
        if not match:
            raise Reject(404, gemini.google_error(404, "Not Found"))
        token = self.credential(handler)
        if not token or token not in self.tokens:
            raise Reject(401, gemini.google_error(401, "Request had invalid authentication credentials. Expected "
                                                       "OAuth 2 access token, login cookie or other valid "
                                                       "authentication credential."))
        gemini.check_headers(received)
        publisher, model, method = match.group(3), unquote(match.group(4)), match.group(5)
        try:
            body = received.json()
        except orjson.JSONDecodeError:
            raise gemini.invalid("Invalid JSON payload received.") from None
        if publisher == "google":
            self._gemini(handler, received, body, model, method, fault)
        else:
            self._claude(handler, body, model, method, fault)

    def _gemini(self, handler, received, body, model, method, fault) -> None:
        if method not in ("generateContent", "streamGenerateContent"):
            raise Reject(404, gemini.google_error(404, f"method {method} not found"))
        stream = method == "streamGenerateContent"
        if stream and parse_qs(urlsplit(received.path).query).get("alt") != ["sse"]:
            raise gemini.invalid("this fake serves streams only as SSE (alt=sse)")
        gemini.answer(handler, gemini.validate_body(body, vertex=True), model, self.gemini, stream, fault)

    def _claude(self, handler, body, model, method, fault) -> None:
        if method not in ("rawPredict", "streamRawPredict"):
            raise Reject(404, gemini.google_error(404, f"method {method} not found"))
        body = claude.validate_body(body, vertex=True)
        if bool(body.get("stream")) != (method == "streamRawPredict"):
            raise claude.invalid("stream must be true exactly for streamRawPredict")
        claude.answer(handler, body, model, self.claude, fault)

    # -- OAuth ----------------------------------------------------------------------------
    def _grant(self, received: Received) -> dict[str, Any]:
        form = parse_qs(received.body.decode())
        if form.get("grant_type") != [GRANT] or len(form.get("assertion", [])) != 1:
            raise Reject(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        claims = self._verify(form["assertion"][0])
        if claims.get("aud") != AUDIENCE:
            raise Reject(400, {"error": "invalid_grant", "error_description": "Invalid JWT: audience."})
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            raise Reject(400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."})
        now = time.time()
        if not (claims.get("iat", now + 999) <= now + 60 < claims.get("exp", 0) + 60) or claims["exp"] - claims["iat"] > 3600:
            raise Reject(400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a "
                                                                              "short-lived token."})
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens.add(token)
        self.issued.append(token)
        return {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _verify(self, assertion: str) -> dict[str, Any]:
        bad = Reject(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        pieces = assertion.split(".")
        if len(pieces) != 3:
            raise bad
        try:
            header, claims = (orjson.loads(_b64(p)) for p in pieces[:2])
            signature = _b64(pieces[2])
        except (ValueError, orjson.JSONDecodeError):
            raise bad from None
        key = self.service_accounts.get(claims.get("iss"))
        if header.get("alg") != "RS256" or key is None:
            raise bad
        try:
            key.verify(signature, f"{pieces[0]}.{pieces[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise bad from None
        return claims


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
