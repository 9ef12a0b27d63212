"""The profile card: show it, set one field, or walk through every field in a dialog."""

from __future__ import annotations

from datetime import timedelta

from handlers import connections, fields
from handlers.context import Context
from handlers.replies import Reply, TextReply
from handlers.router import Router, normalize
from storage import cards, dialogs, followups, privacy
from storage.cards import FIELD_NAMES, SPECS, Value
from storage.dialogs import DialogState

router = Router(name="cards")

CARD_EDIT = "card_edit"
DIALOG_TIMEOUT = timedelta(minutes=30)
SKIP = {"skip", "跳过", "s"}
CANCEL = {"cancel", "取消", "c"}


def show_value(ctx: Context, value: Value) -> str:
    """A field's value for display; tags joined in the member's language."""
    if value in (None, "", []):
        return ctx.t("not_set")
    if isinstance(value, list):
        return ctx.t("tag_joiner").join(value)
    return str(value)


def render_card(ctx: Context, values: dict[str, Value], prefs: privacy.Privacy) -> str:
    """The member's own card, each field with who can see it."""
    lines = [ctx.t("card_header")]
    for name in FIELD_NAMES:
        lines.append(ctx.t("card_line", field=ctx.t(f"field_{name}"), value=show_value(ctx, values[name]),
                           level=ctx.t(f"level_{prefs.level(name)}")))
    # A connector's track record: introductions made and the meetings that came of them.
    made, met = followups.track_record(ctx.session, member_id=ctx.member.id or 0)
    if made:
        lines += ["", ctx.t("track_record", made=made, met=met)]
    lines += ["", ctx.t("card_footer")]
    return "\n".join(lines)


def invalid_text(ctx: Context, field_name: str, problem: fields.Invalid) -> str:
    """A refusal that names the field and, for length, the limit."""
    return ctx.t(problem.key, field=ctx.t(f"field_{field_name}"), **problem.params)


@router.command("card", en=["card", "my card"], zh=["名片", "我的名片"], summary="summary_card")
def card_command(ctx: Context, args: str) -> Reply:
    """Show my card, with who can see each field."""
    mid = ctx.member.id or 0
    values = cards.values(cards.get(ctx.session, member_id=mid))
    return TextReply(render_card(ctx, values, privacy.get(ctx.session, member_id=mid)))


@router.command("set", en=["set"], zh=["设置"], summary="summary_set",
                usage_en="set FIELD VALUE", usage_zh="设置 字段 值")
def set_command(ctx: Context, args: str) -> Reply:
    """Set one field of my card."""
    field_name, value = fields.split_alias(args, fields.FIELD_ALIASES)
    if field_name is None:
        return TextReply(ctx.t("set_usage", fields=field_list(ctx)))
    if not value:
        return TextReply(ctx.t("set_needs_value", field=ctx.t(f"field_{field_name}")))
    parsed = fields.parse_value(field_name, value)
    if isinstance(parsed, fields.Invalid):
        return TextReply(invalid_text(ctx, field_name, parsed))
    _save(ctx, {field_name: parsed})
    return TextReply(ctx.t("field_saved", field=ctx.t(f"field_{field_name}"), value=show_value(ctx, parsed)))


def _save(ctx: Context, changes: dict[str, Value]) -> None:
    """Write validated fields; whoever waits to learn this member's name hears it now."""
    mid = ctx.member.id or 0
    cards.save(ctx.session, member_id=mid, changes=changes, now=ctx.now)
    if changes.get("name"):
        connections.tell_waiting_inviters(ctx.session, member_id=mid, now=ctx.now)


def field_list(ctx: Context) -> str:
    """The field names in the member's language."""
    return ctx.t("list_joiner").join(
        FIELD_ALIASES_SHOWN[ctx.lang][name] for name in FIELD_NAMES)


FIELD_ALIASES_SHOWN = {
    "en": {name: names[0] for name, names in fields.FIELD_ALIASES.items()},
    "zh": {name: next(a for a in names if not a.isascii()) for name, names in fields.FIELD_ALIASES.items()},
}


# --- the card editor, a dialog declared as data: one step per field, in FIELDS order ----------

@router.command("card edit", en=["card edit", "edit card"], zh=["编辑名片", "名片 编辑"],
                summary="summary_card_edit", usage_en="card edit", usage_zh="编辑名片")
def card_edit_command(ctx: Context, args: str) -> Reply:
    """Start the step-by-step card editor."""
    state = DialogState(name=CARD_EDIT, step=FIELD_NAMES[0], data={}, updated_at=ctx.now)
    dialogs.put(ctx.session, member_id=ctx.member.id or 0, state=state)
    return TextReply(ctx.t("edit_intro") + "\n\n" + _prompt(ctx, FIELD_NAMES[0]))


def _prompt(ctx: Context, step: str) -> str:
    current = cards.values(cards.get(ctx.session, member_id=ctx.member.id or 0))[step]
    spec = SPECS[step]
    limit = ctx.t("limit_tags", max=cards.MAX_TAGS, each=spec.max_len) if spec.tags else \
        ctx.t("limit_chars", max=spec.max_len)
    return ctx.t("edit_prompt", n=FIELD_NAMES.index(step) + 1, total=len(FIELD_NAMES),
                 field=ctx.t(f"field_{step}"), limit=limit, current=show_value(ctx, current))


def card_edit_step(ctx: Context, state: DialogState, text: str) -> Reply:
    """One answer in the card editor; the state is written through on every step."""
    mid = ctx.member.id or 0
    answer = normalize(text)
    if answer in CANCEL:
        dialogs.clear(ctx.session, member_id=mid)
        return TextReply(ctx.t("edit_cancelled"))
    data = dict(state.data)
    if answer not in SKIP:
        refusal = _not_a_value(ctx, state, text)
        if refusal is not None:
            dialogs.put(ctx.session, member_id=mid, state=DialogState(state.name, state.step, data, ctx.now))
            return TextReply(refusal + "\n\n" + _prompt(ctx, state.step))
        parsed = fields.parse_value(state.step, text)
        if isinstance(parsed, fields.Invalid):
            # The answer is refused, the step stays where it is, and nothing is lost.
            dialogs.put(ctx.session, member_id=mid,
                              state=DialogState(state.name, state.step, data, ctx.now))
            return TextReply(invalid_text(ctx, state.step, parsed) + "\n\n" + _prompt(ctx, state.step))
        data[state.step] = parsed
    index = FIELD_NAMES.index(state.step) + 1
    if index < len(FIELD_NAMES):
        nxt = FIELD_NAMES[index]
        dialogs.put(ctx.session, member_id=mid, state=DialogState(state.name, nxt, data, ctx.now))
        return TextReply(_prompt(ctx, nxt))
    # The card is written once, at the end: a cancelled or abandoned edit leaves no half card.
    dialogs.clear(ctx.session, member_id=mid)
    if data:
        _save(ctx, data)
    values = cards.values(cards.get(ctx.session, member_id=mid))
    done = ctx.t("edit_done") if data else ctx.t("edit_nothing")
    return TextReply(done + "\n\n" + render_card(ctx, values, privacy.get(ctx.session, member_id=mid)))


def _not_a_value(ctx: Context, state: DialogState, text: str) -> str | None:
    """Why an answer is not taken as the field's value (help, or a command word), or None."""
    from handlers.core import root_router  # the router includes this module

    router = root_router()
    found = router.match(text)
    if found is not None and found.command.name == "help" and not found.args:
        return ctx.t("edit_help", field=ctx.t(f"field_{state.step}"))
    if router.is_command_word(text):
        return ctx.t("edit_command_word", word=text.strip(), field=ctx.t(f"field_{state.step}"))
    return None


DIALOGS = {CARD_EDIT: card_edit_step}
