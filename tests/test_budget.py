"""The messaging budget against a fake WeChat API that enforces the 48-hour window and its quotas.

Nothing is lost, nothing is sent twice, and priorities hold; the member's next message brings
"while you were away…"; outside the window a template notice goes out at most once a day.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.config import ConfigError, load_config
from bot.dispatcher import Dispatcher
from bot.outbox import OutboxSender, merge_replies
from bot.platforms.official_account.api import WeChatAPI
from handlers.events import EventKind, InboundEvent
from handlers.outgoing import tell
from handlers.replies import Choice, ChoicesReply, Reply, TextReply, as_plain_text
from scheduler.clock import FixedClock
from storage import members, outbox
from storage.db import Database
from storage.models import OutboxAttempt, OutboxMessage, OutboxStatus
from tests.fakes.fake_api import (
    APP_ID,
    APP_SECRET,
    CUSTOM_SEND_PATH,
    TEMPLATE_SEND_PATH,
    FakeWeChatAPI,
    fake_api,  # noqa: F401  (fixture)
)

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TEMPLATE = "TPL-notice-1"

MakeSender = Callable[..., OutboxSender]


@pytest.fixture
def clock() -> FixedClock:
    """The time the sender, the dispatcher and the fake WeChat all read."""
    return FixedClock(NOW)


@pytest.fixture
async def make_sender(
    db: Database, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> AsyncIterator[MakeSender]:
    """Senders on the fake API, which enforces WeChat's window and budgets on the test clock."""
    fake_api.enforce_budget(clock.now)
    clients: list[WeChatAPI] = []

    def make(**kwargs: object) -> OutboxSender:
        client = WeChatAPI(db=db, app_id=APP_ID, app_secret=APP_SECRET,
                           base_url=fake_api.base_url, clock=clock, timeout=1.0)
        clients.append(client)
        return OutboxSender(db=db, api=client, clock=clock, **kwargs)  # type: ignore[arg-type]

    yield make
    for client in clients:
        await client.close()


_msg_ids = itertools.count(1)


async def member_writes(
    db: Database, fake: FakeWeChatAPI, clock: FixedClock, openid: str, text: str = "help"
) -> Reply:
    """The member sends a message through the dispatcher; WeChat opens their window too."""
    fake.writes(openid)
    dispatcher = Dispatcher(db=db, clock=clock)
    return await dispatcher.process(InboundEvent(
        kind=EventKind.TEXT, platform="oa", member_id=openid, dedupe_key=f"msg:{next(_msg_ids)}",
        created_at=clock.now(), text=text, raw_type="text"))


def add_member(db: Database, fake: FakeWeChatAPI, openid: str, *, at: datetime = NOW,
               event: bool = False) -> int:
    """A member who wrote (or, with `event`, only subscribed) at `at`; WeChat saw the same."""
    with db.session() as s:
        m = members.touch(s, platform="oa", openid=openid, now=at,
                          user_message=not event, event=event)
        members.set_lang(s, member=m, lang="en", explicit=True)
    saved = fake._now
    fake._now = lambda: at
    (fake.subscribes if event else fake.writes)(openid)
    fake._now = saved
    return m.id


def queue(db: Database, member_id: int, reply: Reply, priority: int, *,
          at: datetime = NOW) -> None:
    with db.session() as s:
        assert tell(s, member_id=member_id, reply=reply, now=at, priority=priority)


def decision(n: int) -> ChoicesReply:
    return ChoicesReply(text=f"Decision {n}: meet someone?",
                        choices=(Choice("Accept", f"accept {n}"), Choice("Decline", f"decline {n}")))


def follow_up(n: int) -> ChoicesReply:
    return ChoicesReply(text=f"Follow-up {n}: did you meet?",
                        choices=(Choice("Yes", f"met {n} yes"), Choice("Not yet", f"met {n} later")))


def nudge(n: int) -> ChoicesReply:
    return ChoicesReply(text=f"Nudge {n}: introduce them?",
                        choices=(Choice("Introduce", f"nudge {n} yes"), Choice("Not now", f"nudge {n} no")))


def rows(db: Database) -> list[OutboxMessage]:
    with db.session() as s:
        return list(s.execute(sa.select(OutboxMessage).order_by(OutboxMessage.id)).scalars())  # type: ignore[arg-type]


def outcomes(db: Database) -> Counter[str]:
    with db.session() as s:
        return Counter(a.outcome for a in s.execute(sa.select(OutboxAttempt)).scalars())


def texts(body: dict[str, object]) -> str:
    """Everything a member sees of one customer-service message."""
    if body["msgtype"] == "text":
        return str(body["text"]["content"])  # type: ignore[index]
    menu = body["msgmenu"]
    return "\n".join([menu["head_content"], *(i["content"] for i in menu["list"]),  # type: ignore[index]
                      menu["tail_content"]])  # type: ignore[index]


MARKERS = (["Decision 1", "Decision 2", "Follow-up 1", "Follow-up 2", "Digest: 3 new connections"]
           + [f"Nudge {n}" for n in (1, 2, 3)])


def queue_eight(db: Database, member_id: int) -> None:
    """Eight messages of mixed priorities, queued least important first."""
    for n in (1, 2, 3):
        queue(db, member_id, nudge(n), outbox.PRIORITY_NUDGE)
    queue(db, member_id, TextReply("Digest: 3 new connections"), outbox.PRIORITY_DIGEST)
    for n in (1, 2):
        queue(db, member_id, follow_up(n), outbox.PRIORITY_FOLLOW_UP)
    for n in (1, 2):
        queue(db, member_id, decision(n), outbox.PRIORITY_DECISION)


def seen_once(messages: list[str], markers: list[str]) -> None:
    """Each marker appears in exactly one message: nothing lost, nothing sent twice."""
    for marker in markers:
        assert sum(marker in m for m in messages) == 1, (marker, messages)


async def test_eight_messages_keep_to_five_by_priority_then_away_reply_and_the_rest(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    alice = add_member(db, fake_api, "o-alice")
    queue_eight(db, alice)
    sender = make_sender()
    assert await sender.send_due() == 8
    sent = [texts(b) for b in fake_api.delivered_to("o-alice")]
    # Five customer-service messages, WeChat refused none: decisions, follow-ups, then one merged.
    assert len(sent) == 5 and all(c.ok for c in fake_api.calls_to(CUSTOM_SEND_PATH))
    assert [s.splitlines()[0] for s in sent[:4]] == [
        "Decision 1: meet someone?", "Decision 2: meet someone?",
        "Follow-up 1: did you meet?", "Follow-up 2: did you meet?"]
    merged = fake_api.delivered_to("o-alice")[4]
    # The merged message keeps the taps of its most important item, the others' commands in text.
    assert merged["msgtype"] == "msgmenu"
    assert [i["content"] for i in merged["msgmenu"]["list"]] == ["nudge 1 yes", "nudge 1 no"]
    assert "nudge 2 yes" in texts(merged) and "nudge 3 no" in texts(merged)
    assert "— Digest —" in texts(merged) and "— Suggestions —" in texts(merged)
    seen_once(sent, MARKERS)
    assert all(r.status == OutboxStatus.SENT for r in rows(db))
    assert outcomes(db) == Counter({"sent": 5, "merged": 3})

    # The budget is spent: what comes now is held by our own count, without asking WeChat.
    calls = len(fake_api.calls_to(CUSTOM_SEND_PATH))
    clock.advance(hours=1)
    queue(db, alice, nudge(4), outbox.PRIORITY_NUDGE, at=clock.now())
    queue(db, alice, decision(3), outbox.PRIORITY_DECISION, at=clock.now())
    queue(db, alice, TextReply("Digest: a new ask"), outbox.PRIORITY_DIGEST, at=clock.now())
    queue(db, alice, follow_up(3), outbox.PRIORITY_FOLLOW_UP, at=clock.now())
    assert await sender.send_due() == 4
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == calls
    assert [r.status for r in rows(db)][8:] == [OutboxStatus.HELD] * 4

    # She writes: the answer carries the three most important held items, the last follows.
    clock.advance(hours=1)
    reply = as_plain_text(await member_writes(db, fake_api, clock, "o-alice", "help"))
    assert "While you were away:" in reply
    away = reply.split("While you were away:")[1]
    assert away.index("Decision 3") < away.index("Follow-up 3") < away.index("Digest: a new ask")
    assert "accept 3" in away and "Nudge 4" not in away and "1 more on the way" in away
    assert [r.status for r in rows(db)][8:] == [OutboxStatus.PENDING, OutboxStatus.SENT,
                                                OutboxStatus.SENT, OutboxStatus.SENT]
    assert outcomes(db)["passive"] == 3
    assert await sender.send_due() == 1
    later = [texts(b) for b in fake_api.delivered_to("o-alice")][5:]
    assert len(later) == 1 and "Nudge 4" in later[0]
    seen_once([*sent, away, *later], MARKERS + ["Decision 3", "Follow-up 3", "Digest: a new ask",
                                                "Nudge 4"])
    assert all(r.status == OutboxStatus.SENT for r in rows(db))
    clock.advance(days=1)
    assert await sender.send_due() == 0


async def test_wechat_refusal_holds_when_our_count_is_wrong(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    bob = add_member(db, fake_api, "o-bob")
    # WeChat counted three messages we never recorded (say, sent by another tool).
    fake_api._sent_at["o-bob"].extend([NOW] * 3)
    for n in (1, 2, 3):
        queue(db, bob, TextReply(f"note {n}"), outbox.PRIORITY_DIGEST)
    sender = make_sender()
    await sender.send_due()
    assert [c.errcode for c in fake_api.calls_to(CUSTOM_SEND_PATH)] == [0, 0, 45047]
    assert [r.status for r in rows(db)] == [OutboxStatus.SENT, OutboxStatus.SENT, OutboxStatus.HELD]
    reply = as_plain_text(await member_writes(db, fake_api, clock, "o-bob", "help"))
    assert "note 3" in reply and rows(db)[2].status == OutboxStatus.SENT
    assert await sender.send_due() == 0
    seen_once([texts(b) for b in fake_api.delivered_to("o-bob")] + [reply],
              ["note 1", "note 2", "note 3"])


async def test_after_a_subscribe_three_a_minute_then_wait(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    cat = add_member(db, fake_api, "o-cat", event=True)
    for n in (1, 2, 3, 4, 5):
        queue(db, cat, TextReply(f"welcome {n}"), outbox.PRIORITY_REPLY + n)
    sender = make_sender()
    await sender.send_due()
    sent = [texts(b) for b in fake_api.delivered_to("o-cat")]
    assert len(sent) == 3 and all(c.ok for c in fake_api.calls_to(CUSTOM_SEND_PATH))
    seen_once(sent, [f"welcome {n}" for n in (1, 2, 3, 4, 5)])
    # A minute later the event's quota is over and she never wrote: new messages wait.
    clock.advance(minutes=2)
    queue(db, cat, TextReply("later"), outbox.PRIORITY_DIGEST, at=clock.now())
    await sender.send_due()
    assert rows(db)[-1].status == OutboxStatus.HELD
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == 3


async def test_outside_the_window_one_template_notice_a_day(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    dan = add_member(db, fake_api, "o-dan", at=NOW - timedelta(days=3))
    queue(db, dan, decision(1), outbox.PRIORITY_DECISION)
    queue(db, dan, decision(2), outbox.PRIORITY_DECISION)
    queue(db, dan, follow_up(1), outbox.PRIORITY_FOLLOW_UP)
    sender = make_sender(notice_template_id=TEMPLATE)
    await sender.send_due()  # holds the three, queues the notice
    await sender.send_due()  # sends the notice
    assert fake_api.calls_to(CUSTOM_SEND_PATH) == []
    [call] = fake_api.calls_to(TEMPLATE_SEND_PATH)
    assert call.ok and call.body["template_id"] == TEMPLATE and call.body["touser"] == "o-dan"
    assert call.body["client_msg_id"] == f"notice-{dan}-2026-03-02"
    assert call.body["data"] == {"thing1": {"value": "3 new in the chat"}}
    # More held the same day: still one notice.
    clock.advance(hours=3)
    queue(db, dan, nudge(1), outbox.PRIORITY_NUDGE, at=clock.now())
    for _ in range(3):
        await sender.send_due()
    assert len(fake_api.calls_to(TEMPLATE_SEND_PATH)) == 1
    # The next day: a notice for what is new since; the day after, nothing new, no notice.
    clock.advance(days=1)
    await sender.send_due()
    await sender.send_due()
    assert [c.body["client_msg_id"] for c in fake_api.calls_to(TEMPLATE_SEND_PATH)] == [
        f"notice-{dan}-2026-03-02", f"notice-{dan}-2026-03-03"]
    clock.advance(days=1)
    await sender.send_due()
    await sender.send_due()
    assert len(fake_api.calls_to(TEMPLATE_SEND_PATH)) == 2
    assert fake_api.calls_to(CUSTOM_SEND_PATH) == [] and fake_api.template_repeats == 0
    # He writes: the most important three in the answer, the nudge follows.
    reply = as_plain_text(await member_writes(db, fake_api, clock, "o-dan", "help"))
    assert "Decision 1" in reply and "Decision 2" in reply and "Follow-up 1" in reply
    await sender.send_due()
    [last] = [texts(b) for b in fake_api.delivered_to("o-dan")]
    assert "Nudge 1" in last and "Nudge 1" not in reply


async def test_outside_the_window_without_a_template_nothing_is_sent(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    eve = add_member(db, fake_api, "o-eve", at=NOW - timedelta(days=3))
    queue(db, eve, decision(1), outbox.PRIORITY_DECISION)
    sender = make_sender()
    for _ in range(3):
        await sender.send_due()
        clock.advance(days=1)
    assert fake_api.calls_to(CUSTOM_SEND_PATH) == [] and fake_api.calls_to(TEMPLATE_SEND_PATH) == []
    assert [r.status for r in rows(db)] == [OutboxStatus.HELD]
    reply = as_plain_text(await member_writes(db, fake_api, clock, "o-eve", "help"))
    assert "While you were away:" in reply and "accept 1" in reply
    assert [r.status for r in rows(db)] == [OutboxStatus.SENT]


async def test_window_closed_by_wechat_gets_a_notice_too(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    # Our record says she wrote an hour ago; WeChat says the window is closed (45015).
    with db.session() as s:
        fay = members.touch(s, platform="oa", openid="o-fay", now=NOW - timedelta(hours=1),
                            user_message=True, event=False).id
    queue(db, fay, TextReply("a digest"), outbox.PRIORITY_DIGEST)
    sender = make_sender(notice_template_id=TEMPLATE)
    await sender.send_due()
    await sender.send_due()
    assert [c.errcode for c in fake_api.calls_to(CUSTOM_SEND_PATH)] == [45015]
    assert rows(db)[0].status == OutboxStatus.HELD
    [call] = fake_api.calls_to(TEMPLATE_SEND_PATH)
    assert call.ok and call.body["data"]["thing1"]["value"] == "1份摘要等你查看，请打开对话"


def test_merge_keeps_the_first_choices_as_taps() -> None:
    merged = merge_replies([(outbox.PRIORITY_REPLY, TextReply("Your answer")),
                            (outbox.PRIORITY_DECISION, decision(7)),
                            (outbox.PRIORITY_NUDGE, nudge(8))], "zh")
    assert isinstance(merged, ChoicesReply)
    assert [c.command for c in merged.choices] == ["accept 7", "decline 7"]
    assert merged.text.startswith("【回复】\nYour answer") and "【待你决定】" in merged.text
    assert "nudge 8 yes" in merged.footer and "【建议】" in merged.footer


def test_templates_sub_table_of_wechat(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[wechat]\npath = "/wx"\n\n[wechat.templates]\nnotice = "T-1"\n')
    assert load_config(good, env={}).wechat_templates.notice == "T-1"
    assert load_config(None, env={"YINJIAN_WECHAT__TEMPLATES__NOTICE": "T-2"}
                       ).wechat_templates.notice == "T-2"
    bad = tmp_path / "bad.toml"
    bad.write_text('[wechat.templates]\nnotise = "T-1"\n')
    with pytest.raises(ConfigError, match=r"^unknown key wechat\.templates\.notise in "):
        load_config(bad, env={})
    bad.write_text('[wechat]\ntemplates = "T-1"\n')
    with pytest.raises(ConfigError, match=r"\[wechat\.templates\] must be a table"):
        load_config(bad, env={})


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_week_nothing_lost_nothing_twice_never_refused(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock,  # noqa: F811
    seed: int,
) -> None:
    import random

    rng = random.Random(seed)
    people = ["o-r1", "o-r2", "o-r3"]
    ids = {p: add_member(db, fake_api, p) for p in people}
    sender = make_sender(notice_template_id=TEMPLATE)
    seen: dict[str, list[str]] = {p: [] for p in people}  # every text each member received
    markers: dict[str, list[str]] = {p: [] for p in people}
    priorities = [outbox.PRIORITY_REPLY, outbox.PRIORITY_DECISION, outbox.PRIORITY_FOLLOW_UP,
                  outbox.PRIORITY_DIGEST, outbox.PRIORITY_NUDGE]
    for step in range(120):
        who = rng.choice(people)
        roll = rng.random()
        if roll < 0.5:
            marker = f"item-{step}-x"
            reply: Reply = TextReply(marker) if rng.random() < 0.5 else ChoicesReply(
                text=marker, choices=(Choice("Yes", f"yes {step}"),))
            queue(db, ids[who], reply, rng.choice(priorities), at=clock.now())
            markers[who].append(marker)
        elif roll < 0.75:
            await sender.send_due()
        elif roll < 0.85:
            seen[who].append(as_plain_text(await member_writes(db, fake_api, clock, who, "help")))
        else:
            clock.advance(hours=rng.choice([1, 6, 30]))
    # Everyone writes at the end; what is left goes out within the new budgets.
    clock.advance(hours=1)
    for _ in range(3):
        for who in people:
            seen[who].append(as_plain_text(await member_writes(db, fake_api, clock, who, "help")))
            while await sender.send_due():
                pass
    # WeChat never had to refuse: our own count kept to its rules.
    assert {c.errcode for c in fake_api.calls_to(CUSTOM_SEND_PATH)} <= {0}
    for who in people:
        received = seen[who] + [texts(b) for b in fake_api.delivered_to(who)]
        seen_once(received, markers[who])
    assert {r.status for r in rows(db) if r.kind != "template"} <= {OutboxStatus.SENT}
    # At most one notice per member and day.
    keys = [c.body["client_msg_id"] for c in fake_api.calls_to(TEMPLATE_SEND_PATH)]
    assert len(keys) == len(set(keys))
