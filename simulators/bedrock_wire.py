"""AWS wire pieces for the fake Bedrock: event-stream encoding and SigV4 verification.

The encoder follows the event-stream spec (botocore only decodes): a 12-byte
prelude (total length, headers length, CRC32 of those 8 bytes), headers
(name length, name, type 7 = string, value length, value), the payload and a
CRC32 of everything before it.
"""
from __future__ import annotations

import binascii
import hmac
import re
import struct
from datetime import datetime, timezone

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AUTH_HEADER = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;\-]+), ?Signature=(?P<signature>[0-9a-f]{64})$")
AMZ_DATE = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 15 * 60  # AWS answers "Signature expired" beyond this


class AwsError(Exception):
    """An error as AWS answers it: a status, an x-amzn-ErrorType and a {"message"} body."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


# -- event stream ------------------------------------------------------------------
def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    raw_headers = b""
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        raw_headers += struct.pack(">B", len(name_bytes)) + name_bytes + b"\x07"
        raw_headers += struct.pack(">H", len(value_bytes)) + value_bytes
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


# -- SigV4 -------------------------------------------------------------------------
def verify_sigv4(method: str, path: str, headers: dict[str, str], body: bytes, secrets: dict[str, str],
                 region: str, service: str = "bedrock") -> tuple[str, list[str]]:
    """Check a SigV4 Authorization header as AWS does; returns (access key id, signed header names)."""
    auth = headers.get("authorization")
    if not auth:
        raise AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    match = AUTH_HEADER.fullmatch(auth)
    amz_date = headers.get("x-amz-date", "")
    if not match or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        raise AwsError(400, "IncompleteSignatureException",
                       "Authorization header requires 'Credential', 'Signature', 'SignedHeaders' and X-Amz-Date.")
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed or any(h not in headers for h in signed):
        raise AwsError(403, "InvalidSignatureException", "'Host' and 'X-Amz-Date' must be signed headers.")
    if "x-amz-security-token" in headers and "x-amz-security-token" not in signed:
        raise AwsError(403, "InvalidSignatureException", "'X-Amz-Security-Token' must be a signed header.")
    if match["date"] != amz_date[:8]:
        raise AwsError(403, "InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD "
                                                         "from ISO-8601 version of date from HTTP.")
    sent = datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=timezone.utc)
    if abs((datetime.now(timezone.utc) - sent).total_seconds()) > MAX_SKEW_SECONDS:
        raise AwsError(403, "InvalidSignatureException", "Signature expired.")
    if match["region"] != region:
        raise AwsError(403, "InvalidSignatureException",
                       f"Credential should be scoped to a valid region, not '{match['region']}'.")
    if match["service"] != service:
        raise AwsError(403, "InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'.")
    secret = secrets.get(match["akid"])
    if secret is None:
        raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    request = AWSRequest(method=method, url=f"http://{headers['host']}{path}", data=body,
                         headers={name: headers[name] for name in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(match["akid"], secret), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise AwsError(403, "InvalidSignatureException",
                       "The request signature we calculated does not match the signature you provided. Check your "
                       "AWS Secret Access Key and signing method. Consult the service documentation for details.")
    return match["akid"], signed
