"""Outbox sender throughput against the fake WeChat API on loopback. Not a test.

Many members, each within their budget (they all wrote just now, a few messages each), are sent
by the real OutboxSender (claim with a lease, budget query, send, record) to the fake API, which
enforces the 48-hour window and the 5-message budget. The baseline, measured in the same run
against the same fake, is raw aiohttp POSTs of the same messages with the same concurrency and
no database. Prints messages per second and the ratio; writes the table into README.md.

    .venv/bin/python -m bench.outbox_throughput [--members 1000] [--per-member 3] [--no-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import sqlalchemy as sa

from scheduler.clock import SystemClock
from bot.outbox import OutboxSender
from bot.platforms.official_account.api import WeChatAPI
from handlers.replies import TextReply, reply_to_json
from storage.db import Database
from storage.models import Member, OutboxMessage, OutboxStatus
from tests.fakes.fake_api import APP_ID, APP_SECRET, CUSTOM_SEND_PATH, TOKEN_PATH, FakeWeChatAPI

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench:outbox:start -->", "<!-- bench:outbox:end -->"
PG_URL = os.environ.get("YINJIAN_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")


@dataclass
class Result:
    """One measured run."""

    name: str
    backend: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds


def seed(db: Database, members: int, per_member: int, now: datetime) -> None:
    """Members who all wrote just now, and `per_member` due text messages each."""
    with db.session() as s:
        s.execute(sa.insert(Member.__table__), [  # type: ignore[attr-defined]
            {"platform": "oa", "openid": f"o-bench-{i}", "status": "active", "created_at": now,
             "last_message_at": now, "lang": "en"} for i in range(members)])
        ids = [r[0] for r in s.execute(sa.select(Member.id).order_by(Member.id))]  # type: ignore[call-overload]
        s.execute(sa.insert(OutboxMessage.__table__), [  # type: ignore[attr-defined]
            {"member_id": member_id, "kind": "text", "priority": 10 + n,
             "payload": reply_to_json(TextReply(f"message {n} for member {member_id}")),
             "status": OutboxStatus.PENDING, "attempts": 0, "created_at": now,
             "next_attempt_at": now} for member_id in ids for n in range(per_member)])


async def run_sender(db_url: str, backend: str, members: int, per_member: int,
                     batch_size: int) -> Result:
    """The real sender until the outbox is empty."""
    fake = FakeWeChatAPI()
    await fake.start()
    clock = SystemClock()
    fake.enforce_budget(clock.now)
    db = Database(db_url)
    await db.upgrade()
    now = clock.now()
    seed(db, members, per_member, now)
    for i in range(members):
        fake.writes(f"o-bench-{i}")
    api = WeChatAPI(db=db, app_id=APP_ID, app_secret=APP_SECRET, base_url=fake.base_url,
                    clock=clock, timeout=5.0)
    sender = OutboxSender(db=db, api=api, clock=clock, batch_size=batch_size)
    await api.access_token()  # the one token fetch is not what we measure
    started = time.perf_counter()
    while await sender.send_due():
        pass
    seconds = time.perf_counter() - started
    total = members * per_member
    with db.session() as s:
        sent = s.execute(sa.select(sa.func.count()).where(
            OutboxMessage.status == OutboxStatus.SENT)).scalar_one()  # type: ignore[arg-type]
    delivered = len(fake.delivered())
    await api.close()
    await db.dispose()
    await fake.close()
    if sent != total or delivered != total:
        raise SystemExit(f"sender: {sent} rows sent, {delivered} delivered, expected {total}")
    return Result(f"OutboxSender, batch {batch_size}", backend, total, seconds)


async def run_baseline(members: int, per_member: int, concurrency: int) -> Result:
    """Raw aiohttp POSTs of the same messages to the same fake, `concurrency` at a time."""
    fake = FakeWeChatAPI()
    await fake.start()
    clock = SystemClock()
    fake.enforce_budget(clock.now)
    for i in range(members):
        fake.writes(f"o-bench-{i}")
    bodies = [{"touser": f"o-bench-{i}", "msgtype": "text",
               "text": {"content": f"message {n} for member {i}"}}
              for n in range(per_member) for i in range(members)]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.base_url}{TOKEN_PATH}", params={
                "grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}) as r:
            token = (await r.json())["access_token"]
        url = f"{fake.base_url}{CUSTOM_SEND_PATH}?access_token={quote(token)}"
        queue = iter(bodies)

        async def worker() -> None:
            for body in queue:
                async with http.post(url, json=body) as answer:
                    data = await answer.json()
                    if data.get("errcode") != 0:
                        raise SystemExit(f"baseline refused: {data}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    await fake.close()
    return Result(f"baseline: raw aiohttp POSTs, {concurrency} at a time", "—", len(bodies), seconds)


def postgres_url() -> tuple[str, str] | None:
    """A fresh schema on the test PostgreSQL, or None when it is not reachable."""
    try:
        import psycopg

        schema = "bench_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception:  # noqa: BLE001 - any failure means "skip PostgreSQL"
        return None
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}", schema


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def measure(members: int, per_member: int, batch_size: int) -> list[Result]:
    results = [await run_baseline(members, per_member, batch_size)]
    with tempfile.TemporaryDirectory() as tmp:
        results.append(await run_sender(f"sqlite:///{Path(tmp) / 'bench.db'}", "SQLite",
                                        members, per_member, batch_size))
    pg = postgres_url()
    if pg is not None:
        try:
            results.append(await run_sender(pg[0], "PostgreSQL", members, per_member, batch_size))
        finally:
            drop_schema(pg[1])
    return results


def table(results: Sequence[Result], members: int, per_member: int, batch_size: int) -> str:
    base = results[0].rate
    lines = ["| sender | backend | messages | seconds | messages/s | vs baseline |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.backend} | {r.messages:,} | {r.seconds:.2f} | "
                     f"{r.rate:,.0f} | {r.rate / base:.0%} |")
    lines += [
        "",
        f"{members:,} members who all wrote just now, {per_member} due text messages each (within "
        f"the 5-message budget, so nothing is merged or held), sent by `OutboxSender.send_due` in "
        f"batches of {batch_size} (claim with a lease, one budget query per batch, one "
        "customer-service call and one recording transaction per message) to the fake WeChat API "
        "(`tests/fakes/fake_api.py`) on 127.0.0.1 in the same process, which enforces the 48-hour "
        "window and budget. Baseline: the same messages as raw aiohttp POSTs to the same fake, "
        f"{batch_size} at a time, no database. Every row is checked sent exactly once.",
        "",
        f"Measured {datetime.now(UTC).date().isoformat()} on nproc {len(os.sched_getaffinity(0))}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, aiohttp "
        f"{aiohttp.__version__}, {platform.system()}.",
    ]
    return "\n".join(lines)


def write_readme(block: str) -> None:
    """Put the block between the outbox markers, added after the other benchmark blocks."""
    text = README.read_text(encoding="utf-8")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = f"{head}{START}\n{block}\n{END}{tail}"
    else:
        marker = "<!-- bench:"
        last = max((text.index(m) + len(m) for m in
                    (line.strip() for line in text.splitlines())
                    if m.startswith(marker) and m.endswith(":end -->")), default=len(text))
        text = f"{text[:last]}\n\n{START}\n{block}\n{END}{text[last:]}"
    README.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, and update README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--per-member", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    if not 1 <= args.per_member <= 5:
        parser.error("--per-member must be 1 to 5 (the budget)")
    results = asyncio.run(measure(args.members, args.per_member, args.batch_size))
    block = table(results, args.members, args.per_member, args.batch_size)
    print(block)
    if not args.no_readme:
        write_readme(block)
        print(f"README.md updated ({START} … {END})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
