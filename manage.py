#!/usr/bin/env python3
"""Keyway management CLI; the commands live in app/cli.py."""
from app.cli import run

if __name__ == "__main__":
    run()
