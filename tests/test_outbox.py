"""The outbox sender through its doors: rows in the outbox table, calls on the fake WeChat API."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.outbox import OutboxSender
from bot.platforms.official_account.api import WeChatAPI
from handlers.outgoing import tell
from handlers.replies import Choice, ChoicesReply, Reply, TextReply
from scheduler.clock import FixedClock
from storage import members, outbox
from storage.db import Database
from storage.models import OutboxAttempt, OutboxMessage, OutboxStatus
from tests.fakes.fake_api import (
    APP_ID,
    APP_SECRET,
    CUSTOM_SEND_PATH,
    QRCODE_CREATE_PATH,
    TEMPLATE_SEND_PATH,
    FakeWeChatAPI,
    fake_api,  # noqa: F401  (fixture)
)

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
BACKOFF_BASE = timedelta(seconds=30)
LEASE = timedelta(minutes=5)
ROOT = Path(__file__).resolve().parent.parent

MakeSender = Callable[..., OutboxSender]


@pytest.fixture
def clock() -> FixedClock:
    """The time every sender in a test reads; tests move it instead of sleeping."""
    return FixedClock(NOW)


@pytest.fixture
async def make_sender(
    db: Database, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> AsyncIterator[MakeSender]:
    """Build senders, each with its own API client (a worker of its own) on the fake."""
    clients: list[WeChatAPI] = []

    def make(*, api: bool = True, **kwargs: object) -> OutboxSender:
        client = None
        if api:
            client = WeChatAPI(db=db, app_id=APP_ID, app_secret=APP_SECRET,
                               base_url=fake_api.base_url, clock=clock, timeout=0.3)
            clients.append(client)
        options: dict[str, object] = {"backoff_base": BACKOFF_BASE, "lease": LEASE}
        options.update(kwargs)
        return OutboxSender(db=db, api=client, clock=clock, **options)  # type: ignore[arg-type]

    yield make
    for client in clients:
        await client.close()


def add_member(db: Database, openid: str, *, platform: str = "oa") -> int:
    """A member who wrote once."""
    with db.session() as s:
        member = members.touch(s, platform=platform, openid=openid, now=NOW,
                               user_message=True, event=False)
        assert member.id is not None
        return member.id


def queue(
    db: Database, member_id: int, reply: Reply | str, *, priority: int = outbox.PRIORITY_DECISION
) -> None:
    """Enqueue a message as the product does, in a committed transaction."""
    if isinstance(reply, str):
        reply = TextReply(reply)
    with db.session() as s:
        assert tell(s, member_id=member_id, reply=reply, now=NOW, priority=priority)


def rows(db: Database) -> list[OutboxMessage]:
    """Every outbox row, oldest first."""
    with db.session() as s:
        return list(s.execute(sa.select(OutboxMessage).order_by(OutboxMessage.id)).scalars())  # type: ignore[arg-type]


def attempts(db: Database) -> list[tuple[int, int | None, str]]:
    """(outbox id, errcode, outcome) of every recorded attempt, in order."""
    with db.session() as s:
        result = s.execute(sa.select(OutboxAttempt).order_by(OutboxAttempt.id))  # type: ignore[arg-type]
        return [(a.outbox_id, a.errcode, a.outcome) for a in result.scalars()]


async def test_due_rows_go_out_in_priority_order_once(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "a nudge", priority=outbox.PRIORITY_NUDGE)
    queue(db, alice, "a decision", priority=outbox.PRIORITY_DECISION)
    sender = make_sender()
    assert await sender.send_due() == 2
    assert [b["text"]["content"] for b in fake_api.delivered_to("o-alice")] == ["a decision", "a nudge"]
    assert all(r.status == OutboxStatus.SENT and r.sent_at == NOW and r.attempts == 1
               for r in rows(db))
    assert sorted(attempts(db)) == [(1, 0, "sent"), (2, 0, "sent")]
    # Sent is final: later passes, even much later, find nothing.
    assert await sender.send_due() == 0
    clock.advance(days=1)
    assert await make_sender().send_due() == 0
    assert len(fake_api.delivered()) == 2


async def test_choices_row_goes_as_msgmenu(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, ChoicesReply(text="Meet Bob?", choices=(Choice("Yes", "accept 3"),)))
    await make_sender().send_due()
    [body] = fake_api.delivered_to("o-alice")
    assert body["msgtype"] == "msgmenu"
    assert body["msgmenu"]["list"] == [{"id": "1", "content": "accept 3"}]


async def test_template_row_is_idempotent_by_row_id(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    with db.session() as s:
        outbox.enqueue_template(s, member_id=alice, template_id="T-1",
                                data={"thing1": {"value": "2 waiting"}}, now=NOW)
    await make_sender().send_due()
    [call] = fake_api.calls_to(TEMPLATE_SEND_PATH)
    assert call.ok and call.body["client_msg_id"] == "yinjian-outbox-1"
    assert call.body["data"] == {"thing1": {"value": "2 waiting"}}
    assert rows(db)[0].status == OutboxStatus.SENT


async def test_qr_invite_row_creates_the_code_then_sends_its_link(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    with db.session() as s:
        outbox.enqueue_qr_invite(s, member_id=alice, code="K7PQ2M", now=NOW,
                                 expire_seconds=7 * 86400, text="Scan to connect: {url}")
    await make_sender().send_due()
    [qr_call] = fake_api.calls_to(QRCODE_CREATE_PATH)
    assert qr_call.ok and qr_call.body["action_info"] == {"scene": {"scene_str": "K7PQ2M"}}
    assert qr_call.body["expire_seconds"] == 7 * 86400
    [body] = fake_api.delivered_to("o-alice")
    assert body["text"]["content"] == (
        "Scan to connect: https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQH%2Fticket%2B2%3D%3D"
    )
    assert rows(db)[0].status == OutboxStatus.SENT


async def test_expired_token_is_refreshed_once_for_ten_queued(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    sender = make_sender()
    first = add_member(db, "o-first")
    queue(db, first, "gets the first token")
    await sender.send_due()
    fake_api.expire_tokens()
    for i in range(10):
        queue(db, add_member(db, f"o-{i}"), f"message {i}")
    assert await sender.send_due() == 10
    assert fake_api.token_fetches == 2
    assert len(fake_api.delivered()) == 11
    assert all(r.status == OutboxStatus.SENT for r in rows(db))


async def test_two_workers_never_send_a_row_twice(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    for i in range(12):
        queue(db, add_member(db, f"o-{i}"), f"message {i}")
    worker_a, worker_b = make_sender(batch_size=5), make_sender(batch_size=5)
    for _ in range(3):  # 12 rows, two workers taking 5 each: three passes are enough
        await asyncio.gather(worker_a.send_due(), worker_b.send_due())
    assert sorted(b["touser"] for b in fake_api.delivered()) == sorted(f"o-{i}" for i in range(12))
    assert fake_api.token_fetches == 1
    assert [a[2] for a in attempts(db)] == ["sent"] * 12


@pytest.mark.parametrize("failure", ["45009", "-1", "http500", "timeout"])
async def test_transient_failure_retried_later_with_backoff(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock,  # noqa: F811
    failure: str,
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "try me")
    if failure == "http500":
        fake_api.fail_http(CUSTOM_SEND_PATH, 500)
    elif failure == "timeout":
        fake_api.hang(CUSTOM_SEND_PATH)
    else:
        fake_api.fail(CUSTOM_SEND_PATH, int(failure))
    errcode = int(failure) if failure.lstrip("-").isdigit() else None
    sender = make_sender()
    await sender.send_due()
    [row] = rows(db)
    assert row.status == OutboxStatus.PENDING and row.last_errcode == errcode
    assert NOW + BACKOFF_BASE / 2 <= row.next_attempt_at <= NOW + BACKOFF_BASE
    assert attempts(db) == [(row.id, errcode, "retry")]
    # Not before the backoff is over...
    assert await sender.send_due() == 0
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == 1
    # ...and then it goes out.
    clock.set(row.next_attempt_at)
    assert await sender.send_due() == 1
    assert [b["text"]["content"] for b in fake_api.delivered()] == ["try me"]
    assert attempts(db)[-1] == (row.id, 0, "sent")


async def test_gives_up_after_eight_transient_failures(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "never gets through")
    fake_api.fail(CUSTOM_SEND_PATH, 45009, times=20)
    sender = make_sender()
    waits = []
    for _ in range(8):
        assert await sender.send_due() == 1
        [row] = rows(db)
        waits.append(row.next_attempt_at - clock.now())
        clock.set(row.next_attempt_at)
    [row] = rows(db)
    assert row.status == OutboxStatus.FAILED and row.attempts == 8 and row.last_errcode == 45009
    assert [(e, o) for _, e, o in attempts(db)] == [(45009, "retry")] * 7 + [(45009, "failed")]
    # Each wait lies in [ceiling/2, ceiling], the ceiling doubling each time.
    for n, wait in enumerate(waits[:7]):
        assert BACKOFF_BASE * 2**n / 2 <= wait <= BACKOFF_BASE * 2**n
    clock.advance(days=1)
    assert await sender.send_due() == 0
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == 8


async def test_refused_token_twice_waits_and_retries(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "hello")
    fake_api.fail(CUSTOM_SEND_PATH, 40001, times=2)
    sender = make_sender()
    await sender.send_due()
    assert fake_api.token_fetches == 2  # the first token, and one refresh: not one per retry
    assert attempts(db) == [(1, 40001, "retry")]
    clock.advance(seconds=BACKOFF_BASE.total_seconds())
    await sender.send_due()
    assert rows(db)[0].status == OutboxStatus.SENT
    assert fake_api.token_fetches == 2


@pytest.mark.parametrize("errcode", [45015, 45047])
async def test_closed_window_holds_until_the_member_writes(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock,  # noqa: F811
    errcode: int,
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "first")
    queue(db, alice, "second")
    fake_api.fail(CUSTOM_SEND_PATH, errcode)
    sender = make_sender()
    assert await sender.send_due() == 2
    assert [(r.status, r.last_errcode) for r in rows(db)] == [(OutboxStatus.HELD, errcode)] * 2
    # The second was held without asking WeChat: the answer would have been the same.
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == 1
    assert attempts(db) == [(1, errcode, "held")]
    clock.advance(days=3)
    assert await sender.send_due() == 0
    with db.session() as s:  # the member writes again, as the dispatcher records it
        members.touch(s, platform="oa", openid="o-alice", now=clock.now(),
                      user_message=True, event=False)
        assert outbox.release_held(s, member_id=alice, now=clock.now()) == 2
    assert await sender.send_due() == 2
    assert [b["text"]["content"] for b in fake_api.delivered()] == ["first", "second"]
    assert [r.status for r in rows(db)] == [OutboxStatus.SENT] * 2


async def test_closed_window_does_not_hold_template_messages(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "first")
    with db.session() as s:
        outbox.enqueue_template(s, member_id=alice, template_id="T-1",
                                data={"thing1": {"value": "waiting"}}, now=NOW,
                                priority=outbox.PRIORITY_DECISION)
    queue(db, alice, "third")
    fake_api.fail(CUSTOM_SEND_PATH, 45015)
    await make_sender().send_due()
    assert [r.status for r in rows(db)] == [OutboxStatus.HELD, OutboxStatus.SENT,
                                            OutboxStatus.HELD]
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == 1
    assert [c.ok for c in fake_api.calls_to(TEMPLATE_SEND_PATH)] == [True]


@pytest.mark.parametrize("errcode", [43004, 40003])
async def test_unreachable_member_is_undeliverable(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock,  # noqa: F811
    errcode: int,
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "hello")
    fake_api.fail(CUSTOM_SEND_PATH, errcode)
    sender = make_sender()
    await sender.send_due()
    [row] = rows(db)
    assert row.status == OutboxStatus.UNDELIVERABLE and row.last_errcode == errcode
    assert attempts(db) == [(row.id, errcode, "undeliverable")]
    clock.advance(days=1)
    assert await sender.send_due() == 0 and len(fake_api.calls) == 2  # token + one send


async def test_other_errcode_fails_and_is_recorded(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "hello")
    fake_api.fail(CUSTOM_SEND_PATH, 48001, errmsg="api unauthorized")
    await make_sender().send_due()
    [row] = rows(db)
    assert row.status == OutboxStatus.FAILED
    with db.session() as s:
        [attempt] = s.execute(sa.select(OutboxAttempt)).scalars()
    assert (attempt.errcode, attempt.outcome, attempt.errmsg) == (48001, "failed", "api unauthorized")


async def test_crash_between_claim_and_send_loses_nothing(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "survives a crash")
    # A sender claims the row and dies before sending.
    with db.session() as s:
        claimed = outbox.claim_due(s, now=NOW, lease_until=NOW + LEASE, limit=10)
    assert [c.openid for c in claimed] == ["o-alice"]
    sender = make_sender()
    assert await sender.send_due() == 0  # still leased to the dead sender
    clock.advance(seconds=LEASE.total_seconds())
    assert await sender.send_due() == 1
    assert len(fake_api.delivered()) == 1
    assert rows(db)[0].status == OutboxStatus.SENT


_ENQUEUE_AND_DIE = textwrap.dedent("""
    import sys, threading
    from datetime import UTC, datetime
    from handlers.outgoing import tell
    from handlers.replies import TextReply
    from storage.db import Database

    db = Database(sys.argv[1])
    with db.session() as s:
        tell(s, member_id=int(sys.argv[2]), reply=TextReply("queued, then killed"),
             now=datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    print("committed", flush=True)
    threading.Event().wait()  # the sender would run now; SIGKILL comes first
""")


async def test_message_committed_before_a_kill_is_sent_by_the_next_sender(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ENQUEUE_AND_DIE, db.url, str(alice),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line.strip() == b"committed"
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL
    assert await make_sender().send_due() == 1
    assert [b["text"]["content"] for b in fake_api.delivered()] == ["queued, then killed"]


async def test_terminal_members_are_left_for_the_terminal(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    queue(db, add_member(db, "ann", platform="chat"), "for the terminal")
    assert await make_sender().send_due() == 0
    assert await make_sender(api=False).send_due() == 0
    assert [r.status for r in rows(db)] == [OutboxStatus.PENDING]
    assert fake_api.calls == []


async def test_deactivated_member_receives_nothing(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "too late")
    with db.session() as s:
        member = members.get(s, platform="oa", openid="o-alice")
        assert member is not None
        members.deactivate(s, member=member, now=NOW)
    await make_sender().send_due()
    assert [r.status for r in rows(db)] == [OutboxStatus.UNDELIVERABLE]
    assert fake_api.calls == []


async def test_without_api_messages_are_logged_not_sent(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice = add_member(db, "o-alice")
    queue(db, alice, "a private note")
    caplog.set_level(logging.DEBUG, logger="bot.outbox")
    assert await make_sender(api=False).send_due() == 1
    [row] = rows(db)
    assert row.status == OutboxStatus.SENT
    assert attempts(db) == [(row.id, None, "logged")]
    assert fake_api.calls == []
    ours = [r for r in caplog.records if r.name == "bot.outbox"]
    info = " ".join(r.getMessage() for r in ours if r.levelno >= logging.INFO)
    debug = " ".join(r.getMessage() for r in ours if r.levelno == logging.DEBUG)
    assert f"member {alice}" in info and "a private note" not in info
    assert "a private note" in debug


async def test_run_sends_at_once_when_woken(
    db: Database, make_sender: MakeSender, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    alice = add_member(db, "o-alice")
    sender = make_sender(poll_interval=3600)  # only wake() can make it look again in time
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    queue(db, alice, "right away")
    sender.wake()
    await fake_api.wait_until(lambda: len(fake_api.delivered()) == 1)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert [r.status for r in rows(db)] == [OutboxStatus.SENT]
