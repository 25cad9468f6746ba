#!/usr/bin/env python3
"""Keyway management CLI; the commands live in app/cli.py."""
import sys

if sys.argv[1:2] == ["serve"]:
    # Before anything imports threading or the database layer, so that the
    # scoped session and the drivers see gevent's greenlet-aware primitives.
    from gevent import monkey

    monkey.patch_all()

from app.cli import run  # noqa: E402

if __name__ == "__main__":
    run()
