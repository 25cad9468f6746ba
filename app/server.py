"""gunicorn with gevent workers: each worker holds hundreds of concurrent streams."""
from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication


class KeywayServer(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Imported in the worker, after gevent has patched the standard library.
        from app import create_app

        return create_app()


def run_gunicorn(host: str, port: int, workers: int | None = None) -> None:
    # Production records usage through the journaled, batched writer unless told otherwise.
    os.environ.setdefault("METERING_MODE", "journal")
    KeywayServer({
        "bind": f"{host}:{port}",
        "workers": workers or os.cpu_count() or 2,
        "worker_class": "gevent",
        "worker_connections": 1000,
        "keepalive": 75,
        "timeout": 300,
        "graceful_timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "preload_app": False,
    }).run()
