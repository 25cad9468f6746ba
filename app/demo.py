"""`manage.py demo`: seed a living demo and serve it with simulated providers."""
import click


def register(cli: click.Group) -> None:
    pass
