"""Dates and times as members read them: Beijing time, which the texts name."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

BEIJING = ZoneInfo("Asia/Shanghai")


def local_date(value: datetime) -> str:
    """2026-03-02"""
    return value.astimezone(BEIJING).strftime("%Y-%m-%d")


def local_minute(value: datetime) -> str:
    """2026-03-02 17:00"""
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")
