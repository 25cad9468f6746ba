"""The baseline for bench/speed.py: the least a BYOK gateway must do, as a gevent + Flask app.

Parse the client's JSON body, forward it with the client's Authorization header
over a pooled urllib3 client to $PASSTHRU_UPSTREAM, and answer with the
provider's body (streamed through when the client asked for a stream). No
authentication of its own, no database, no recording.
"""
import os

import orjson
import urllib3
from flask import Flask, Response, request

_upstream = urllib3.util.parse_url(os.environ.get("PASSTHRU_UPSTREAM", "http://127.0.0.1:18080/v1"))
_pool = urllib3.HTTPConnectionPool(_upstream.host, _upstream.port or 80, maxsize=256, block=False, retries=False,
                                   timeout=urllib3.Timeout(connect=5.0, read=600.0))
_path = (_upstream.path or "").rstrip("/") + "/chat/completions"
app = Flask(__name__)


@app.get("/health")
def health():
    return "ok"


@app.post("/v1/chat/completions")
def chat():
    raw = request.get_data()
    stream = bool(orjson.loads(raw).get("stream"))
    upstream = _pool.urlopen("POST", _path, body=raw, preload_content=not stream, release_conn=not stream,
                             headers={"Content-Type": "application/json",
                                      "Authorization": request.headers.get("Authorization", "")})
    kind = upstream.headers.get("Content-Type", "application/json")
    if not stream:
        return Response(upstream.data, status=upstream.status, content_type=kind)

    def relay():
        try:
            yield from upstream.stream(65536)
        finally:
            upstream.release_conn()

    return Response(relay(), status=upstream.status, content_type=kind)
