"""Real `yinjian serve` processes, and the faults the reliability tests inflict on them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlmodel import col

from handlers.outgoing import tell
from handlers.replies import TextReply, as_plain_text, reply_from_json
from storage import members
from storage.db import Database
from storage.models import OutboxMessage, OutboxStatus
from tests.fakes.fake_api import APP_ID, APP_SECRET, CUSTOM_SEND_PATH, FakeWeChatAPI

YINJIAN = str(Path(sys.executable).with_name("yinjian"))
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def via_port(db_url: str, port: int) -> str:
    """The same PostgreSQL database URL, reached through 127.0.0.1:port (a proxy)."""
    return make_url(db_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


@dataclass
class ServeProcess:
    """One `yinjian serve` worker, its stderr going to a file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the worker logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_healthy(self, timeout: float = 90) -> None:
        """Until /healthz says 200 (the migrations ran and the database answers)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log()
                try:
                    async with session.get(f"{self.base_url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"yinjian serve did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as when the machine or the OOM killer strikes."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    async def stop(self) -> str:
        """SIGINT and wait for a clean exit; what it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.log()


def start_serve(tmp_path: Path, name: str, *, db_url: str, token: str,
                api: FakeWeChatAPI | None = None) -> ServeProcess:
    """Start `yinjian serve` on a free port: plain mode, scheduler off, the fake API if given."""
    port = free_port()
    wechat = f'token = "{token}"\n'
    if api is not None:
        wechat += (f'app_id = "{APP_ID}"\napp_secret = "{APP_SECRET}"\n'
                   f'api_base_url = "{api.base_url}"\n')
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[server]\nport = {port}\n[storage]\nurl = "{db_url}"\n'
                      f'[wechat]\n{wechat}[scheduler]\nenabled = false\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("YINJIAN_")}
    log_path = tmp_path / f"{name}.log"
    with log_path.open("ab") as err:
        proc = subprocess.Popen([YINJIAN, "serve", "--config", str(config)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    return ServeProcess(proc=proc, port=port, log_path=log_path)


# --- kill -9 in the middle of sending ------------------------------------------------------------

@dataclass
class KillFigures:
    """What a kill -9 mid-send cost: counted by each message's unique text."""

    messages: int
    delivered_before_kill: int
    leased_at_kill: int  # rows the killed sender had claimed and not finished
    in_flight_at_kill: int  # of those, the ones whose HTTP call it had already made
    lost: int
    duplicated: int
    resume_seconds: float  # from the restart until every row was sent
    first_send_seconds: float  # from the restart until the first message went out
    duplicates: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)


def fill_outbox(db: Database, *, messages: int, prefix: str) -> list[str]:
    """One message each for `messages` members who wrote just now (their window is open)."""
    now = datetime.now(UTC)
    texts = [f"{prefix} {n:04d}" for n in range(messages)]
    with db.session() as s:
        for n, body in enumerate(texts):
            member = members.touch(s, platform="oa", openid=f"o_kill_{n:04d}", now=now,
                                   user_message=True, event=False)
            tell(s, member_id=member.id, reply=TextReply(body), now=now)
    return texts


def _outbox_rows(session: Session) -> list[tuple[str, str]]:
    return [(status, payload) for status, payload in session.execute(
        sa.select(col(OutboxMessage.status), col(OutboxMessage.payload))).all()]


async def kill_mid_send(tmp_path: Path, db_url: str, api: FakeWeChatAPI, *, messages: int = 300,
                        kill_after: int = 110, timeout: float = 90,
                        graceful: bool = False) -> KillFigures:
    """Fill the outbox, start a worker, SIGKILL it mid-send, restart it, count what arrived.

    With `graceful`, the worker is stopped with SIGINT instead (the baseline: it finishes the
    rows it holds before it exits).
    """
    db = Database(db_url)
    await db.upgrade()
    texts = fill_outbox(db, messages=messages, prefix="kill-test message")
    worker = start_serve(tmp_path, "first", db_url=db_url, token="killtesttoken", api=api)
    try:
        # Right after the call that makes kill_after: it, and the others of its batch, wait for
        # the (slowed) fake's answer when the worker dies.
        await api.wait_until(lambda: len(api.calls_to(CUSTOM_SEND_PATH)) >= kill_after,
                             timeout=timeout)
        if graceful:
            await worker.stop()
        else:
            worker.kill()
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    delivered_before = len(api.delivered())
    leased = {as_plain_text(reply_from_json(p)) for status, p in await db.run(_outbox_rows)
              if status == OutboxStatus.SENDING}
    started = time.monotonic()
    again = start_serve(tmp_path, "again", db_url=db_url, token="killtesttoken", api=api)
    try:
        while time.monotonic() - started < timeout:
            if all(status == OutboxStatus.SENT for status, _ in await db.run(_outbox_rows)):
                break
            await asyncio.sleep(0.25)
        resume = time.monotonic() - started
        await api.wait_until(lambda: not api.in_flight(), timeout=10)
    finally:
        log = await again.stop()
        await db.dispose()
    # Calls that arrived before the restart were made by the killed worker, some of them
    # (still in the kernel's buffers) reaching the fake only after it died.
    sends = api.calls_to(CUSTOM_SEND_PATH)
    called = {c.body["text"]["content"] for c in sends if c.at < started}
    first_after = min((c.at for c in sends if c.at >= started), default=started + timeout)
    assert "Traceback" not in log, log
    counts = Counter(b["text"]["content"] for b in api.delivered())
    duplicates = {t for t, n in counts.items() if n > 1}
    return KillFigures(
        messages=messages, delivered_before_kill=delivered_before, leased_at_kill=len(leased),
        in_flight_at_kill=len(leased & called), lost=sum(1 for t in texts if t not in counts),
        duplicated=sum(n - 1 for n in counts.values()), resume_seconds=resume,
        first_send_seconds=first_after - started, duplicates=duplicates, in_flight=leased & called,
    )
