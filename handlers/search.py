"""Search of my network: `find QUERY` / `找 QUERY`."""

from __future__ import annotations

from handlers.router import Router

router = Router(name="search")
