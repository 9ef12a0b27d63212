"""Double-opt-in introductions: `intro N`, `introduce A B`, `requests`, `accept ID`, `decline ID`."""

from __future__ import annotations

from handlers.router import Router

router = Router(name="intros")
