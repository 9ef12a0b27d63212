"""The catalogues of user-facing text, one per language."""

from __future__ import annotations

from typing import Any

from handlers.texts import en, zh

DEFAULT_LANG = "zh"
LANGS = ("zh", "en")
CATALOGUES: dict[str, dict[str, str]] = {"zh": zh.TEXTS, "en": en.TEXTS}


def text(lang: str, key: str, **kwargs: Any) -> str:
    """The text `key` in `lang`, with its placeholders filled."""
    catalogue = CATALOGUES.get(lang, CATALOGUES[DEFAULT_LANG])
    return catalogue[key].format(**kwargs)
