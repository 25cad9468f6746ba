"""The per-worker price book loads on first use, whatever the monotonic clock reads."""
from __future__ import annotations

from app.billing import pricing


def test_first_lookup_loads_even_on_a_freshly_booted_machine(app, monkeypatch):
    book = pricing.PriceBook(ttl=30.0)
    monkeypatch.setattr(pricing.time, "monotonic", lambda: 5.0)  # up for five seconds: less than the TTL
    assert book.lookup("openai", "gpt-4o-mini") is not None


def test_journal_folder_is_per_database(app):
    from app.billing.journal import JournalWriter

    other = type("A", (), {"config": {**app.config, "DATABASE_URL": app.config["DATABASE_URL"] + "-other"},
                           "instance_path": app.instance_path})()
    mine, theirs = JournalWriter.for_app(app), JournalWriter.for_app(other)
    try:
        assert mine.directory != theirs.directory
    finally:
        mine.close()
        theirs.close()
