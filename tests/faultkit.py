"""Faults the reliability tests inflict on the bot."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def via_port(db_url: str, port: int) -> str:
    """The same PostgreSQL database URL, reached through 127.0.0.1:port (a proxy)."""
    return make_url(db_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
