"""ChoicesReply -> WeCom button_interaction card: buttons run commands, and typing still works."""

from __future__ import annotations

import pytest

from bot.platforms.wecom.cards import (
    BUTTON_TEXT_CHARS,
    MAX_BUTTONS,
    SUB_TITLE_CHARS,
    TASK_ID,
    TITLE_CHARS,
    choice_card,
    task_id_for,
)
from handlers.replies import Choice, ChoicesReply, as_plain_text

INTRO = ChoicesReply(
    text="Li Wei asks to be introduced to Zhang Min.\nFor advice on hiring.",
    choices=(Choice("Accept", "accept 12"), Choice("Decline", "decline 12")),
    footer="Reply within 7 days.",
)


def test_an_introduction_becomes_one_card_with_two_buttons() -> None:
    card = choice_card(INTRO, unique_id="outbox-381")
    c = card.template_card
    assert c["card_type"] == "button_interaction" and card.lead_text is None
    # The first line is past the title's 36 characters: it goes on in the desc, cut at a space.
    assert c["main_title"] == {"title": "Li Wei asks to be introduced to", "desc": "Zhang Min."}
    assert c["sub_title_text"].startswith("For advice on hiring.\nReply within 7 days.\n")
    assert c["button_list"] == [{"text": "Accept", "style": 1, "key": "accept 12"},
                                {"text": "Decline", "style": 2, "key": "decline 12"}]
    assert card.commands == ("accept 12", "decline 12")
    # The commands stay visible as text, to type when buttons are not shown or not wanted.
    assert "Reply within 7 days." in c["sub_title_text"]
    assert "accept 12" in c["sub_title_text"] and "decline 12" in c["sub_title_text"]
    assert c["task_id"] == card.task_id and card.task_id.startswith("outbox-381-")
    assert TASK_ID.fullmatch(card.task_id)


def test_task_ids_are_unique_and_in_wecoms_alphabet() -> None:
    assert task_id_for("outbox-1") != task_id_for("outbox-1")
    for unique_id in ("intro/12 é", "x" * 500, "", "a@b_c-d"):
        task_id = task_id_for(unique_id)
        assert TASK_ID.fullmatch(task_id) and len(task_id.encode()) <= 128, task_id
    assert task_id_for("a@b_c-d").startswith("a@b_c-d-")


def test_a_short_text_fills_title_and_desc() -> None:
    reply = ChoicesReply(text="张敏想认识你\n她在招聘设计师", choices=(Choice("同意", "同意 5"),))
    c = choice_card(reply, unique_id="u").template_card
    assert c["main_title"] == {"title": "张敏想认识你", "desc": "她在招聘设计师"}
    assert c["sub_title_text"] == "· 同意: 同意 5"


def test_more_choices_than_buttons_stay_typable() -> None:
    reply = ChoicesReply(text="Pick one", choices=tuple(Choice(f"C{i}", f"pick {i}") for i in range(9)))
    card = choice_card(reply, unique_id="u")
    assert len(card.template_card["button_list"]) == MAX_BUTTONS
    assert all(f"pick {i}" in card.template_card["sub_title_text"] for i in range(9))


def test_repeated_and_overlong_commands_are_not_buttons_but_still_listed() -> None:
    long_command = "note " + "长" * 400  # 1,205 bytes: past a key's 1,024
    reply = ChoicesReply(text="Choose", choices=(Choice("A", "a"), Choice("A again", "a"),
                                                 Choice("Long", long_command)))
    card = choice_card(reply, unique_id="u")
    assert card.commands == ("a",)
    assert card.lead_text == as_plain_text(reply) and long_command in card.lead_text


def test_long_text_goes_first_as_a_message_and_the_card_keeps_the_buttons() -> None:
    reply = ChoicesReply(text="A very long heading that does not fit the card title at all, really\n"
                         + "detail " * 60, choices=INTRO.choices)
    card = choice_card(reply, unique_id="u")
    assert card.lead_text == as_plain_text(reply)
    title = card.template_card["main_title"]["title"]
    assert len(title) == TITLE_CHARS and title.endswith("…")
    assert len(card.template_card["sub_title_text"]) <= SUB_TITLE_CHARS
    assert card.commands == ("accept 12", "decline 12")


def test_long_labels_are_cut_to_the_button_width() -> None:
    reply = ChoicesReply(text="t", choices=(Choice("Introduce me to them", "intro 3"),))
    (button,) = choice_card(reply, unique_id="u").template_card["button_list"]
    assert len(button["text"]) == BUTTON_TEXT_CHARS and button["key"] == "intro 3"


def test_a_reply_without_usable_choices_is_not_a_card() -> None:
    with pytest.raises(ValueError):
        choice_card(ChoicesReply(text="nothing to choose"), unique_id="u")
    with pytest.raises(ValueError):
        choice_card(ChoicesReply(text="t", choices=(Choice("x", "y" * 1100),)), unique_id="u")
