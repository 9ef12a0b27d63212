"""The `yinjian` command as an operator runs it: config errors, db upgrade, run-job, serve, chat."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from bot.config import ConfigError, load_config
from handlers.outgoing import tell
from storage import pushes
from storage.db import Database
from storage.models import InboundPush
from tests.fakes.wechat_server import FakeWeChatServer, text_xml

YINJIAN = str(Path(sys.executable).with_name("yinjian"))


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every `yinjian` started here gets a home and data folder of its own (the default DB)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    return home


def default_db(home: Path) -> Path:
    """Where the embedded default database lives for that home (platformdirs on Linux)."""
    return home / "data" / "yinjian" / "yinjian.db"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("YINJIAN_")}
    full_env.update(env or {})
    return subprocess.run([YINJIAN, *args], env=full_env, cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("toml, key", [
    ('[wechat]\nencoding_aes_key = "tooshort"\napp_id = "wx1"\n', "wechat.encoding_aes_key"),
    ('[wechat]\ntokn = "abc"\n', "wechat.tokn"),
    ('[server]\nport = "eighty"\n', "server.port"),
    ('[server]\nport = 70000\n', "server.port"),
    ('[scheduler]\nenabled = "yes"\n', "scheduler.enabled"),
    ('[scheduler]\ntimezone = "Mars/Olympus"\n', "scheduler.timezone"),
    ('[storage]\nurl = "mysql://x"\n', "storage.url"),
    ('[nope]\na = 1\n', "[nope]"),
    ('[wechat\n', "not valid TOML"),
])
def test_invalid_config_is_one_clear_line(tmp_path: Path, toml: str, key: str) -> None:
    result = run("db", "upgrade", "--config", str(write(tmp_path / "c.toml", toml)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.stderr


def test_environment_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.toml", '[server]\nport = 9000\n'),
                      env={"YINJIAN_SERVER__PORT": "9100", "YINJIAN_WECHAT__APP_SECRET": "s3cret",
                           "YINJIAN_WECHAT__APP_ID": "wx1", "YINJIAN_SCHEDULER__ENABLED": "off"})
    assert cfg.server.port == 9100 and cfg.wechat.app_secret == "s3cret" and not cfg.scheduler.enabled
    with pytest.raises(ConfigError, match="wechat.encoding_aes_key"):
        load_config(None, env={"YINJIAN_WECHAT__ENCODING_AES_KEY": "x" * 42, "YINJIAN_WECHAT__APP_ID": "wx"})
    with pytest.raises(ConfigError, match="wechat.colour"):
        load_config(None, env={"YINJIAN_WECHAT__COLOUR": "red"})
    result = run("db", "upgrade", env={"YINJIAN_SERVER__PORT": "many", "YINJIAN_STORAGE__URL":
                                       f"sqlite:///{tmp_path / 'x.db'}"})
    assert result.returncode == 2 and "server.port" in result.stderr and "Traceback" not in result.stderr


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[wechat]\npath = "/hook"\n')
    assert load_config(None, env={"YINJIAN_CONFIG": str(path)}).wechat.path == "/hook"


def test_example_config_documents_and_loads_every_key() -> None:
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config.example.toml", env={})
    text = (root / "config.example.toml").read_text(encoding="utf-8")
    from dataclasses import fields

    for section in ("server", "storage", "wechat", "wechat_templates", "scheduler", "invites",
                    "privacy"):
        for f in fields(getattr(cfg, section)):
            assert re.search(rf"^{f.name} = ", text, re.M), f"{section}.{f.name} is not documented"


def test_no_config_is_the_embedded_default(_own_home: Path) -> None:
    cfg = load_config(None, env={})
    assert cfg.storage.url == f"sqlite:///{default_db(_own_home)}" and cfg.dev_token and cfg.wechat.token
    assert not cfg.wechat.api_configured
    # `url = ""`, as in a copy of config.example.toml, is the embedded default too.
    assert load_config(None, env={"YINJIAN_STORAGE__URL": ""}).storage.url == cfg.storage.url


def test_commands_from_different_folders_share_the_default_database(
        tmp_path: Path, _own_home: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    alice = run("chat", "--user", "alice", cwd=here, stdin="lang en\nset name Alice\ninvite\n")
    assert f"SQLite {default_db(_own_home)}" in alice.stderr  # the absolute path, at start
    code = re.search(r"^\s*join ([A-Z2-9]{6,10})$", alice.stdout, re.M)
    assert code, alice.stdout
    bob = run("chat", "--user", "bob", cwd=there, stdin=f"lang en\njoin {code.group(1)}\n")
    assert "connected with Alice" in bob.stdout, bob.stdout
    assert default_db(_own_home).exists()
    assert not (here / "yinjian.db").exists() and not (there / "yinjian.db").exists()


# --- db upgrade and run-job --------------------------------------------------------------------

def test_db_upgrade_creates_the_schema(db_url: str) -> None:
    result = run("db", "upgrade", env={"YINJIAN_STORAGE__URL": db_url})
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(Database(db_url).sync_url)
    try:
        assert "outbox" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


ALEMBIC_CHATTER = ("Context impl", "Will assume", "Running upgrade", "alembic")


def test_start_up_logs_are_quiet(tmp_path: Path) -> None:
    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'quiet.db'}"}
    first = run("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "database migrated to" in first.stderr  # one line of our own when migrations ran
    assert not any(noise in first.stderr for noise in ALEMBIC_CHATTER), first.stderr
    for args, stdin in ((("db", "upgrade"), None), (("run-job", "prune-pushes"), None),
                        (("chat", "--user", "quiet"), "help\n")):
        again = run(*args, env=env, stdin=stdin)
        assert again.returncode == 0, again.stderr
        assert not any(noise in again.stderr for noise in ALEMBIC_CHATTER), (args, again.stderr)
        assert "migrated" not in again.stderr


async def test_run_job_as_of_a_time(db_url: str) -> None:
    db = Database(db_url)
    await db.upgrade()
    with db.session() as s:
        pushes.claim(s, key="old", openid="o", now=datetime(2026, 1, 1, tzinfo=timezone.utc))
        pushes.claim(s, key="new", openid="o", now=datetime(2026, 1, 9, tzinfo=timezone.utc))
    result = await asyncio.to_thread(run, "run-job", "prune-pushes", "--at", "2026-01-10T08:00:00+08:00",
                                     env={"YINJIAN_STORAGE__URL": db_url})
    assert result.returncode == 0, result.stderr
    assert "removed 1" in result.stdout
    with db.session() as s:
        assert (s.execute(sa.select(sa.func.count()).select_from(InboundPush))).scalar_one() == 1
        assert not pushes.claim(s, key="new", openid="o", now=datetime(2026, 1, 10, tzinfo=timezone.utc))
        assert pushes.claim(s, key="old", openid="o", now=datetime(2026, 1, 10, tzinfo=timezone.utc))
    await db.dispose()


def test_run_job_errors(tmp_path: Path) -> None:
    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'j.db'}"}
    unknown = run("run-job", "no-such-job", env=env)
    assert unknown.returncode == 2 and "prune-pushes" in unknown.stderr
    bad_time = run("run-job", "prune-pushes", "--at", "yesterday", env=env)
    assert bad_time.returncode == 2 and "ISO-8601" in bad_time.stderr
    listed = run("run-job", "--list", env=env)
    assert listed.returncode == 0 and "prune-pushes" in listed.stdout


def test_run_job_without_a_name_lists_the_jobs(tmp_path: Path) -> None:
    from scheduler.jobs import JOBS

    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'j.db'}"}
    listed = run("run-job", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == list(JOBS)
    unknown = run("run-job", "no-such-job", env=env)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run("db", "upgrade", env={"YINJIAN_STORAGE__URL": "postgresql://127.0.0.1:1/none"})
    assert result.returncode == 1 and "storage.url" in result.stderr and "Traceback" not in result.stderr


# --- serve ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_healthy(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("yinjian serve did not become healthy")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    return err


async def test_serve_on_the_embedded_default(tmp_path: Path, _own_home: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YINJIAN_")}
    env["YINJIAN_SERVER__PORT"] = str(port)
    proc = subprocess.Popen([YINJIAN, "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        await _wait_healthy(port, proc)
        assert default_db(_own_home).exists() and not (tmp_path / "yinjian.db").exists()
    finally:
        log = _stop(proc)
    assert f"storage: SQLite {default_db(_own_home)}" in log
    token = re.search(r"development token[^:]*: (\w+)", log)
    assert token, log
    assert "recorded in the database and the log" in log


def test_serve_on_a_taken_port_fails_at_once(tmp_path: Path) -> None:
    db_file = tmp_path / "never.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", env={"YINJIAN_SERVER__PORT": str(port),
                                   "YINJIAN_STORAGE__URL": f"sqlite:///{db_file}",
                                   "YINJIAN_SCHEDULER__ENABLED": "true"}, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "server.port" in lines[0], lines
    assert not db_file.exists()  # nothing was migrated, scheduled or sent before it gave up


async def test_serve_answers_a_safe_mode_push(db_url: str, tmp_path: Path) -> None:
    port = _free_port()
    config = write(tmp_path / "c.toml", f"""
[server]
port = {port}
[storage]
url = "{db_url}"
[wechat]
token = "servetoken1"
app_id = "wx0123456789abcdef"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
[scheduler]
enabled = true
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("YINJIAN_")}
    proc = subprocess.Popen([YINJIAN, "serve", "--config", str(config)], env=env, text=True,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        await _wait_healthy(port, proc)
        fake = FakeWeChatServer(url=f"http://127.0.0.1:{port}/wechat", token="servetoken1",
                                app_id="wx0123456789abcdef",
                                aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", mode="safe")
        answer = await fake.push(text_xml("o_serve", "帮助", fake.next_msg_id()))
        assert answer.status == 200 and (answer.content or "").startswith("可用命令")
    finally:
        log = _stop(proc)
    assert "scheduler started with jobs: prune-pushes, purge-deactivated" in log
    assert not any(noise in log for noise in ALEMBIC_CHATTER), log
    assert "servetoken1" not in log and "帮助" not in log  # no secret, no member text at INFO


# --- chat ---------------------------------------------------------------------------------------

def test_chat_in_the_terminal(tmp_path: Path) -> None:
    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'chat.db'}"}
    first = run("chat", "--user", "alice", env=env, stdin="help\nlang en\nhelp\nblah\n:q\n")
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "欢迎来到引荐" in out  # a new member is welcomed, as after following on WeChat
    assert "Commands" in out and "From now on I will answer in English." in out
    assert "did not understand “blah”" in out
    again = run("chat", "--user", "alice", env=env, stdin="help\n")
    assert "Chatting with Yinjian as alice" in again.stdout and "欢迎" not in again.stdout


async def test_chat_shows_messages_queued_for_the_member(db_url: str) -> None:
    from handlers.replies import Choice, ChoicesReply
    from storage import members
    from storage.models import OutboxMessage

    env = {"YINJIAN_STORAGE__URL": db_url}
    first = await asyncio.to_thread(run, "chat", "--user", "bob", env=env, stdin="lang en\n")
    assert first.returncode == 0, first.stderr
    db = Database(db_url)
    with db.session() as s:
        bob = members.get(s, platform="chat", openid="bob")
        assert bob is not None and bob.id is not None
        now = datetime.now(timezone.utc)
        tell(s, member_id=bob.id, now=now, reply=ChoicesReply(
            "Carol would like an introduction.", (Choice("accept 12", "accept 12"),
                                                  Choice("decline 12", "decline 12"))))
    shown = await asyncio.to_thread(run, "chat", "--user", "bob", env=env, stdin="")
    assert "Carol would like an introduction." in shown.stdout and "accept 12" in shown.stdout
    again = await asyncio.to_thread(run, "chat", "--user", "bob", env=env, stdin="")
    assert "Carol" not in again.stdout  # shown once, then it counts as delivered
    with db.session() as s:
        assert (s.execute(sa.select(OutboxMessage.status))).scalar_one() == "sent"
    await db.dispose()


async def test_idle_chat_shows_a_message_as_it_arrives(db_url: str) -> None:
    env = {"YINJIAN_STORAGE__URL": db_url}
    alice = await asyncio.to_thread(run, "chat", "--user", "alice", env=env,
                                    stdin="lang en\nset name Alice\ninvite\n")
    code = re.search(r"^\s*join ([A-Z2-9]{6,10})$", alice.stdout, re.M)
    assert code, alice.stdout
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("YINJIAN_")} | env
    # Alice sits at her terminal and types nothing: stdin is an open pipe that stays silent.
    proc = await asyncio.create_subprocess_exec(
        YINJIAN, "chat", "--user", "alice", env=full_env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"Chatting with Yinjian as alice" in banner
        bob = await asyncio.to_thread(run, "chat", "--user", "bob", env=env,
                                      stdin=f"set name Bob\njoin {code.group(1)}\n")
        assert bob.returncode == 0, bob.stderr

        async def until_shown() -> bytes:
            while b"Bob used your invite" not in (line := await proc.stdout.readline()):  # type: ignore[union-attr]
                assert line, "alice's chat ended without showing the message"
            return line

        assert (await asyncio.wait_for(until_shown(), 5)).startswith(b"bot (message): ")
    finally:
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


def test_newcomer_flow_in_the_terminal(tmp_path: Path) -> None:
    """PRODUCT.md's first minute: card, invite, connect, contacts, export, delete."""
    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'newcomer.db'}"}
    alice = run("chat", "--user", "alice", env=env, stdin="lang en\nset name Alice\nset title Founder\ninvite\n")
    code = re.search(r"^\s*join ([A-Z2-9]{6,10})$", alice.stdout, re.M)
    assert code, alice.stdout
    bob = run("chat", "--user", "bob", env=env,
              stdin=f"设置 姓名 Bob\n加入 {code.group(1)}\n熟悉度 1 2\n人脉\n")
    assert "你已和Alice建立联系。" in bob.stdout and "1. Alice——共事或同学" in bob.stdout
    back = run("chat", "--user", "alice", env=env, stdin="contacts\nexport\ndelete me\ndelete me confirm\n")
    assert "Bob used your invite: you are now connected." in back.stdout  # queued while away
    assert "1. Bob — not rated yet" in back.stdout
    assert re.search(r"http://127\.0\.0\.1:8080/export/[\w-]{20,}", back.stdout)
    assert "delete me confirm" in back.stdout and "Your data has been deleted." in back.stdout
    after = run("chat", "--user", "bob", env=env, stdin="人脉\n")
    assert "还没有联系人" in after.stdout


def test_introduction_flow_in_the_terminal(tmp_path: Path) -> None:
    """Issue 4's flow in `yinjian chat`: search, request, forward with a vouch, accept, exchange."""
    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'intro.db'}"}

    def chat(user: str, *lines: str) -> str:
        result = run("chat", "--user", user, env=env, stdin="".join(f"{line}\n" for line in lines))
        assert result.returncode == 0, result.stderr
        return result.stdout

    def code_in(out: str) -> str:
        found = re.search(r"^\s*join ([A-Z2-9]{6,10})$", out, re.M)
        assert found, out
        return found.group(1)

    chat("ann", "lang en", "set name Ann", "set contact ann@example.com")
    first, second = code_in(chat("ben", "lang en", "set name Ben", "invite")), code_in(chat("ben", "invite"))
    chat("ann", f"join {first}")
    chat("cat", "lang en", "set name Cat", "set title Tax lawyer", "set contact cat@example.com",
         f"join {second}")
    found = chat("ann", "find lawyer", "intro 1 Could you help with our tax setup?")
    assert "1. Cat — Tax lawyer" in found and "via Ben" in found
    assert "cat@example.com" not in found
    asked = chat("ben")
    step = re.search(r"accept (\d+)", asked)
    assert step and "Ann asks you for an introduction to Cat" in asked
    chat("ben", f"accept {step.group(1)} Ann is a careful founder")
    offered = chat("cat")
    step = re.search(r"accept (\d+)", offered)
    assert step and "Ben vouches" in offered and "ann@example.com" not in offered
    done = chat("cat", f"accept {step.group(1)}")
    assert "Contact: ann@example.com" in done
    exchanged = chat("ann", "contacts")
    assert "Contact: cat@example.com" in exchanged and "2. Cat" in exchanged


def test_every_job_runs_from_the_command_line(tmp_path: Path) -> None:
    """`yinjian run-job NAME --at TIME` for every registered job, on a fresh database."""
    from scheduler.jobs import JOBS

    env = {"YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    listed = run("run-job", "--list", env=env).stdout
    for name in JOBS:
        assert name in listed
        result = run("run-job", name, "--at", "2026-03-02T09:05:00+08:00", env=env)
        assert result.returncode == 0 and result.stdout.startswith(f"{name}: "), (name, result.stderr)
