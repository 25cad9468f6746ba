"""The server-rendered dashboard: one blueprint per audience."""
from flask import Flask


def register(app: Flask) -> None:
    pass
