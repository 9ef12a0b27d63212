"""Command router: English and Chinese aliases, case- and width-insensitive, optional leading '/'."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from handlers.context import Context
from handlers.replies import Reply

Handler = Callable[[Context, str], Reply]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalize(text: str) -> str:
    """Fold full-width forms (NFKC), case and runs of white space; drop one leading '/'."""
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    folded = re.sub(r"\s+", " ", folded)
    if folded.startswith("/"):
        folded = folded[1:].lstrip()
    return folded


def parse_number(raw: str) -> Optional[int]:
    """A number a member typed back (an id, a contact number, days), or None when it is none.

    Full-width digits count (a Chinese keyboard types them); digits of other scripts and
    superscripts do not, and more than 18 digits is no id we ever printed (it would not even
    fit the database's integers).
    """
    folded = raw.strip().translate(_FULL_WIDTH_DIGITS).lstrip("#＃")
    if not folded or len(folded) > 18 or not (folded.isascii() and folded.isdigit()):
        return None
    return int(folded)


_FULL_WIDTH_DIGITS = {0xFF10 + i: ord("0") + i for i in range(10)}


def split_first(args: str) -> tuple[str, str]:
    """(the first word, the rest as typed) of a command's arguments; any white space separates."""
    parts = args.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def has_cjk(text: str) -> bool:
    """True when the text contains Chinese characters."""
    return bool(_CJK.search(text))


@dataclass(frozen=True)
class Command:
    """One command with its aliases in both languages."""

    name: str
    handler: Handler
    en: tuple[str, ...]
    zh: tuple[str, ...]
    summary: str  # catalogue key of the one-line description shown by `help`
    usage_en: str = ""
    usage_zh: str = ""
    hidden: bool = False
    # Whether a member's first use of this command decides their reply language.
    sets_language: bool = True


@dataclass(frozen=True)
class Match:
    """A routed text: the command, the rest of the text, and the language of the alias used."""

    command: Command
    args: str
    lang: str


@dataclass
class Router:
    """Maps texts to commands; routers can include other routers, and the first match wins."""

    name: str = "root"
    commands: list[Command] = field(default_factory=list)
    children: list["Router"] = field(default_factory=list)

    def command(
        self,
        name: str,
        *,
        en: Iterable[str],
        zh: Iterable[str],
        summary: str,
        usage_en: str = "",
        usage_zh: str = "",
        hidden: bool = False,
        sets_language: bool = True,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of a command."""

        def register(handler: Handler) -> Handler:
            self.commands.append(
                Command(
                    name=name,
                    handler=handler,
                    en=tuple(normalize(a) for a in en),
                    zh=tuple(normalize(a) for a in zh),
                    summary=summary,
                    usage_en=usage_en or next(iter(en)),
                    usage_zh=usage_zh or next(iter(zh)),
                    hidden=hidden,
                    sets_language=sets_language,
                )
            )
            return handler

        return register

    def include(self, router: "Router") -> None:
        """Add a child router, consulted after this router's own commands."""
        self.children.append(router)

    def all_commands(self) -> list[Command]:
        """Every command in this tree, in matching order."""
        out = list(self.commands)
        for child in self.children:
            out.extend(child.all_commands())
        return out

    def is_command_word(self, text: str) -> bool:
        """True when the text is exactly one command's word (an alias with nothing after it)."""
        folded = normalize(text)
        return any(folded in (c.en + c.zh) for c in self.all_commands())

    def match(self, text: str) -> Optional[Match]:
        """Find the command a text asks for; the longest alias wins, then registration order."""
        folded = normalize(text)
        if not folded:
            return None
        best: Optional[Match] = None
        best_len = -1
        for command in self.all_commands():
            for lang, aliases in (("en", command.en), ("zh", command.zh)):
                for alias in aliases:
                    if len(alias) <= best_len:
                        continue
                    rest = after_alias(folded, alias)
                    if rest is None:
                        continue
                    best, best_len = Match(command, _original_args(text, alias, rest), lang), len(alias)
        return best


def after_alias(folded: str, alias: str) -> Optional[str]:
    """The folded text after `alias`, or None when the text does not start with that word."""
    if folded == alias:
        return ""
    if not folded.startswith(alias):
        return None
    rest = folded[len(alias):]
    if rest.startswith(" "):
        return rest[1:]
    # Chinese is written without spaces: "找律师" is "找" + "律师". Latin aliases need a space.
    if has_cjk(alias[-1]) and rest:
        return rest
    return None


def text_after(text: str, alias: str) -> Optional[str]:
    """What follows the command word `alias` in `text`, exactly as the member typed it.

    Folding (NFKC, case, white space, a leading '/') decides where the command word ends;
    what comes after it is kept character for character, trimmed at both ends: free text is
    never folded (PRODUCT.md). None when the text does not start with `alias`.
    """
    original = text.strip()
    # A folded prefix grows by at most a few characters per typed one (e.g. 'ß' -> 'ss').
    for end in range(1, min(len(original), 4 * len(alias) + 4) + 1):
        head = normalize(original[:end])
        if head != alias:
            if len(head) > len(alias) + 1:
                break
            continue
        rest = original[end:]
        if not rest.strip():
            return ""
        if rest[0].isspace() or has_cjk(alias[-1]):
            return rest.strip()
    return None


def _original_args(text: str, alias: str, folded_rest: str) -> str:
    """Arguments as the member typed them (full-width forms and case kept), trimmed."""
    found = text_after(text, alias)
    return folded_rest.strip() if found is None else found
