"""Search of my network: `find QUERY` / `找 QUERY`."""

from __future__ import annotations

from handlers.context import Context
from handlers.replies import Reply, TextReply
from handlers.router import Router
from handlers.visibility import note_shown, visible_card
from storage import search
from storage.cards import Value

router = Router(name="search")

# On the result's first line, after the name; the other visible fields follow on a line of their own.
_SUMMARY_FIELDS = ("title", "company", "city", "industry")
_DETAIL_FIELDS = ("offers", "needs", "bio", "contact")
_MAX_ECHO = 40
# Longer than any real query; refused before any work is done, with the limit stated.
FIND_MAX = 100


@router.command("find", en=["find", "search"], zh=["找", "搜索", "查找"], summary="summary_find",
                usage_en="find WORDS", usage_zh="找 关键词")
def find_command(ctx: Context, args: str) -> Reply:
    """Search my network up to the 3rd degree; numbered results, each with its path."""
    query = args.strip()
    if len(query) > FIND_MAX:
        return TextReply(ctx.t("find_too_long", max=FIND_MAX, got=len(query)))
    if not search.tokenize(query):
        return TextReply(ctx.t("find_usage"))
    me = ctx.member.id or 0
    outcome = search.find(ctx.session, viewer_id=me, query=query, now=ctx.now)
    search.store_results(ctx.session, member_id=me, hits=[f.hit for f in outcome.found], now=ctx.now)
    echo = query if len(query) <= _MAX_ECHO else query[:_MAX_ECHO] + "…"
    if not outcome.found:
        return TextReply(ctx.t("find_none", query=echo))
    note_shown(ctx.session, viewer_id=me, owner_ids=[f.hit.target_id for f in outcome.found]
               + [f.hit.path[1] for f in outcome.found if f.hit.degree > 1])
    lines = [ctx.t("find_header", query=echo, n=len(outcome.found))]
    for found in outcome.found:
        # The one visibility rule decides every field shown, the path's names included.
        shown = visible_card(found.card, found.prefs, found.hit.degree)
        lines.append(_first_line(ctx, found.hit.n, shown))
        details = [ctx.t("find_field", field=ctx.t(f"field_{name}"), value=_text(ctx, shown[name]))
                   for name in _DETAIL_FIELDS if name in shown]
        if details:
            lines.append("   " + ctx.t("find_detail_joiner").join(details))
        lines.append("   " + _path(ctx, outcome, found.hit))
    lines.append(ctx.t("find_footer"))
    return TextReply("\n".join(lines))


def _text(ctx: Context, value: Value) -> str:
    return ctx.t("tag_joiner").join(value) if isinstance(value, list) else str(value or "")


def _first_line(ctx: Context, n: int, shown: dict[str, Value]) -> str:
    name = _text(ctx, shown.get("name")) or ctx.t("unnamed")
    summary = ctx.t("list_joiner").join(_text(ctx, shown[f]) for f in _SUMMARY_FIELDS if f in shown)
    return ctx.t("find_line", n=n, name=name) + (ctx.t("find_summary", summary=summary) if summary else "")


def _path(ctx: Context, outcome: search.SearchOutcome, hit: search.SearchHit) -> str:
    """How I reach the result: directly, via the mutual contact, or via my first hop."""
    if hit.degree == 1:
        return ctx.t("find_path_1")
    card, prefs = outcome.people[hit.path[1]]
    # The first hop is my own contact, so I see their card at the 1st degree.
    name = _text(ctx, visible_card(card, prefs, 1).get("name")) or ctx.t("unnamed")
    return ctx.t("find_path_2" if hit.degree == 2 else "find_path_3", name=name)
