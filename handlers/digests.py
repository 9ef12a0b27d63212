"""Digests: `digest weekly|daily|off` / `摘要 每周|每日|关闭`."""

from __future__ import annotations

from handlers.router import Router

router = Router(name="digests")
