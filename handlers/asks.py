"""Asks, referral nudges and follow-ups: `ask TEXT`, `asks`, `close ID`, and their answers."""

from __future__ import annotations

from handlers.router import Router

router = Router(name="asks")
