"""manage.py commands for billing: prices, rollups, invoices, checks."""
import click


def register(cli: click.Group) -> None:
    pass
