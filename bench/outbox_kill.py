"""What kill -9 in the middle of sending costs the outbox: lost, duplicated, time to resume. Not a test.

A few hundred messages wait in the outbox for members whose 48-hour window is open; a real
`yinjian serve` sends them to the fake WeChat API (slowed a little, so that calls are in flight)
and is killed with SIGKILL mid-send, then started again. Messages are counted by their unique
text at the fake. The baseline, measured in the same run, stops the worker with SIGINT instead
(it finishes what it holds). tests/test_faults.py runs the same scenario as a test.

    .venv/bin/python -m bench.outbox_kill [--messages 300] [--latency 0.05] [--no-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.outbox_throughput import drop_schema, postgres_url
from bot.outbox import LEASE, RENEW_EVERY
from tests.fakes.fake_api import FakeWeChatAPI
from tests.faultkit import KillFigures, kill_mid_send

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench:kill:start -->", "<!-- bench:kill:end -->"


@dataclass
class Row:
    """One measured restart."""

    stop: str
    backend: str
    figures: KillFigures


async def one(db_url: str, tmp: Path, *, messages: int, latency: float, graceful: bool) -> KillFigures:
    """One stop-and-restart against a fresh fake WeChat API."""
    api = FakeWeChatAPI(latency=latency)
    await api.start()
    try:
        return await kill_mid_send(tmp, db_url, api, messages=messages,
                                   kill_after=messages // 3 + 10, graceful=graceful)
    finally:
        await api.close()


async def measure(messages: int, latency: float) -> list[Row]:
    """Baseline and kill -9, on SQLite and (when reachable) PostgreSQL."""
    rows: list[Row] = []
    for graceful, stop in ((True, "SIGINT (baseline)"), (False, "SIGKILL")):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(Row(stop, "SQLite", await one(f"sqlite:///{Path(tmp) / 'kill.db'}",
                                                      Path(tmp), messages=messages,
                                                      latency=latency, graceful=graceful)))
        pg = postgres_url()
        if pg is not None:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    rows.append(Row(stop, "PostgreSQL", await one(
                        pg[0], Path(tmp), messages=messages, latency=latency, graceful=graceful)))
            finally:
                drop_schema(pg[1])
    return rows


def table(rows: Sequence[Row], messages: int, latency: float) -> str:
    """The figures as a Markdown table, with how they were measured."""
    lines = [("| stop | backend | messages | delivered before | leased at stop | in flight | lost | "
              "duplicated | sending again s | all sent s |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = r.figures
        lines.append(f"| {r.stop} | {r.backend} | {f.messages} | {f.delivered_before_kill} | "
                     f"{f.leased_at_kill} | {f.in_flight_at_kill} | {f.lost} | {f.duplicated} | "
                     f"{f.first_send_seconds:.1f} | {f.resume_seconds:.1f} |")
    how = (f"{messages} due text messages, one each for members who wrote just now, sent by "
           f"`yinjian serve` (batches of 20, lease {LEASE.total_seconds():.0f} s renewed every "
           f"{RENEW_EVERY.total_seconds():.0f} s) to the fake WeChat API answering each send "
           f"after {latency * 1000:.0f} ms; the worker is stopped right after the fake received "
           f"send number {messages // 3 + 10}, then started again. In flight: rows the stopped "
           "sender had leased whose HTTP call it had made. Times are from the restart "
           "(including start-up).")
    when = (f"Measured {datetime.now(UTC).date().isoformat()} on nproc "
            f"{len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
            f"{platform.system()}.")
    lines += ["", how, "", when]
    return "\n".join(lines)


def write_readme(block: str) -> None:
    """Put the block between the kill markers of README.md (which must be there)."""
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, and update README.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per fake send")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    args = parser.parse_args(argv)
    block = table(asyncio.run(measure(args.messages, args.latency)), args.messages, args.latency)
    print(block)
    if not args.no_readme:
        write_readme(block)
        print(f"README.md updated ({START} … {END})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
