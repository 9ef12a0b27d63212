"""Real `yinjian serve` processes, and the faults the reliability tests inflict on them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url

from tests.fakes.fake_api import APP_ID, APP_SECRET, FakeWeChatAPI

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
