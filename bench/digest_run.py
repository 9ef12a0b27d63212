"""Digest benchmark: one `digests` job run over 100,000 members on SQLite.

    .venv/bin/python -m bench.digest_run                    # 100,000 members, writes the README table
    .venv/bin/python -m bench.digest_run --members 10000 --no-readme

Generates members with cards, settings (weekly by default; some daily, off, hidden names, and
some in Europe/Berlin, whose Monday 09:00 has not come yet), a graph whose connections were made
over the last eight weeks (so one in eight is news for this week's digest), pending and
completed introductions, open asks and due follow-ups. Then, in a fresh process, it runs the job
function exactly as the scheduler does, as of Monday 09:05 in Asia/Shanghai, and measures wall
time and peak RSS (VmHWM). The baseline, measured in the same process on the same database just
before, is a plain SELECT streaming every member id. Not a test: it exits 0 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench:digest:start -->", "<!-- bench:digest:end -->"
AFTER = "<!-- bench:search:end -->"
TARGET_S, TARGET_RSS_MB = 60.0, 300.0
# Monday 2 March 2026, 09:05 in Asia/Shanghai.
NOW = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)
NAMES = ["王伟", "李娜", "张敏", "刘洋", "陈静", "杨磊", "Alice Wang", "Ben Li", "Chloe Chen", "David Liu"]
TITLES = ["律师", "投资经理", "产品经理", "Lawyer", "Product Manager", "Software Engineer", "Founder"]
ASKS = ["找一位律师", "looking for a lawyer", "需要投资经理", "need a product manager"]


def vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _t(v: datetime) -> str:
    return v.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _pairs(members: int, pairs: int, rng: random.Random) -> Iterator[tuple[int, int]]:
    seen: set[int] = set()
    while len(seen) < pairs:
        a = rng.randrange(members)
        b = (a + rng.randint(1, 100)) % members if rng.random() < 0.85 else rng.randrange(members)
        key = min(a, b) * members + max(a, b)
        if a == b or key in seen:
            continue
        seen.add(key)
        yield a + 1, b + 1


def generate(path: str, members: int, pairs: int, seed: int) -> dict[str, int]:
    """Fill a migrated SQLite file with the benchmark's data (one transaction, executemany)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    joined = _t(NOW - timedelta(days=90))
    conn.executemany(
        "INSERT INTO member (id, platform, openid, lang, status, created_at) VALUES (?, 'mp', ?, ?, ?, ?)",
        ((i, f"bench{i}", "zh" if i % 3 else "en", "deactivated" if i % 100 == 0 else "active", joined)
         for i in range(1, members + 1)))
    conn.executemany(
        "INSERT INTO card (member_id, name, title, offers, needs, updated_at) VALUES (?, ?, ?, '[]', '[]', ?)",
        ((i, rng.choice(NAMES), rng.choice(TITLES), joined) for i in range(1, members + 1)))
    settings: list[tuple[int, str, str, str | None]] = []
    for i in range(1, members + 1):
        roll = rng.random()
        if roll < 0.05:
            settings.append((i, "{}", "off", None))
        elif roll < 0.20:
            settings.append((i, "{}", "daily", None))
        elif roll < 0.25:
            settings.append((i, "{}", "weekly", "Europe/Berlin"))
        elif roll < 0.28:
            settings.append((i, json.dumps({"name": "hidden"}), "weekly", None))
        elif roll < 0.30:
            settings.append((i, json.dumps({"name": "connections"}), "weekly", None))
    conn.executemany("INSERT INTO member_settings (member_id, visibility, stealth, digest, timezone) "
                     "VALUES (?, ?, 0, ?, ?)", settings)
    edges = list(_pairs(members, pairs, rng))
    rows = []
    numbers: dict[int, int] = {}
    for a, b in edges:
        at = _t(NOW - timedelta(seconds=rng.randrange(56 * 86400)))
        for x, y in ((a, b), (b, a)):
            numbers[x] = numbers.get(x, 0) + 1
            rows.append((x, y, "invite", at, numbers[x]))
    conn.executemany("INSERT INTO connection (member_id, contact_id, source, created_at, number) "
                     "VALUES (?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO contact_seq (member_id, last) VALUES (?, ?)", list(numbers.items()))
    # Broker introductions: 5% still waiting for both parties, 2% completed this week.
    step_id = 0
    intros: list[tuple[Any, ...]] = []
    steps: list[tuple[Any, ...]] = []
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    brokers = [c for c, ns in neighbours.items() if len(ns) >= 2]
    for c in rng.sample(brokers, min(len(brokers), members // 10)):
        a, b = rng.sample(neighbours[c], 2)  # two of the broker's contacts
        intro_id = len(intros) + 1
        done = rng.random() < 0.3
        made = NOW - timedelta(days=rng.uniform(0.1, 6.5))
        intros.append((intro_id, "broker", a, b, c, "", json.dumps([a, c, b]), "completed" if done else "pending",
                       _t(made - timedelta(days=1)), _t(made) if done else None))
        for who in (a, b):
            step_id += 1
            steps.append((step_id, intro_id, 1, who, "party", "accepted" if done else "pending",
                          _t(made - timedelta(days=1)), _t(made + timedelta(days=6))))
    conn.executemany("INSERT INTO intro (id, kind, requester_id, target_id, broker_id, note, path, status, "
                     "created_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", intros)
    conn.executemany("INSERT INTO intro_step (id, intro_id, seq, actor_id, role, status, vouch, created_at, "
                     "expires_at) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)", steps)
    asks = [(rng.randrange(1, members + 1), rng.choice(ASKS), "open", _t(NOW - timedelta(days=3)),
             _t(NOW + timedelta(days=27))) for _ in range(members // 50)]
    conn.executemany("INSERT INTO ask (member_id, text, status, created_at, expires_at) VALUES (?, ?, ?, ?, ?)", asks)
    completed = [i for i in intros if i[7] == "completed"][: members // 100]
    conn.executemany("INSERT INTO follow_up (intro_id, member_id, round, due_at, status) VALUES (?, ?, 1, ?, 'asked')",
                     [(i[0], i[2], _t(NOW - timedelta(hours=5))) for i in completed])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return {"members": members, "connections": 2 * len(edges), "intros": len(intros), "steps": len(steps),
            "asks": len(asks), "follow_ups": len(completed)}


def measure(url: str, batch: int) -> dict[str, Any]:
    """Baseline, then the job, in this (fresh) process."""
    import sqlalchemy as sa

    from bot.config import load_config
    from bot.app import handler_settings
    from scheduler.jobs import JOBS, JobDeps
    from storage.db import Database

    db = Database(url)
    config = load_config(None, env={"YINJIAN_STORAGE__URL": url})
    t0 = time.perf_counter()
    with db.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            sa.text("SELECT id FROM member ORDER BY id"))
        n = sum(len(part) for part in result.partitions())
    baseline_s = time.perf_counter() - t0
    rss_before = vm_hwm_mb()
    t0 = time.perf_counter()

    async def job() -> str:
        return await JOBS["digests"].func(JobDeps(db=db, settings=handler_settings(config)), NOW)

    summary = asyncio.run(job())
    job_s = time.perf_counter() - t0
    # The next quarter-hour's run finds every key taken: what the job costs the rest of the day.
    t0 = time.perf_counter()
    again = asyncio.run(job())
    rerun_s = time.perf_counter() - t0
    with db.session() as s:
        statuses: dict[str, int] = dict(s.execute(sa.text(
            "SELECT status, count(*) FROM outbox WHERE dedupe_key LIKE 'digest:%' GROUP BY status")).all())
    db.dispose_sync()
    return {"baseline_s": baseline_s, "baseline_rows": n, "job_s": job_s, "rerun_s": rerun_s, "again": again,
            "rss_mb": vm_hwm_mb(),
            "rss_before_mb": rss_before, "summary": summary, "statuses": statuses}


def table(gen: dict[str, int], m: dict[str, Any]) -> str:
    """The README block."""
    ok_time = "PASS" if m["job_s"] < TARGET_S else "FAIL"
    ok_rss = "PASS" if m["rss_mb"] < TARGET_RSS_MB else "FAIL"
    queued = m["statuses"].get("pending", 0)
    empty = m["statuses"].get("empty", 0)
    return "\n".join([
        "| run | backend | wall s | vs baseline | digests queued | empty (not sent) | peak RSS MB | target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        (f"| baseline: stream every member id | SQLite | {m['baseline_s']:.2f} | 1× | — | — | "
        f"{m['rss_before_mb']:.0f} | — |"),
        (f"| `digests` job | SQLite | {m['job_s']:.1f} | {m['job_s'] / m['baseline_s']:.0f}× | {queued:,} | "
        f"{empty:,} | {m['rss_mb']:.0f} | time {ok_time}, RSS {ok_rss} |"),
        (f"| `digests` job again (every key taken) | SQLite | {m['rerun_s']:.1f} | "
         f"{m['rerun_s'] / m['baseline_s']:.0f}× | 0 | — | {m['rss_mb']:.0f} | — |"),
        "",
        (f"{gen['members']:,} members (1% deactivated; 5% digest off, 15% daily, 5% in Europe/Berlin where "
        f"it is not 09:00 yet, 3% with a hidden name), {gen['connections']:,} connection rows made over the "
        f"last 8 weeks, {gen['intros']:,} broker introductions (30% completed this week) with "
        f"{gen['steps']:,} steps, {gen['asks']:,} open asks, {gen['follow_ups']:,} due follow-ups. One "
        f"run of the job function as of Monday 09:05 in Asia/Shanghai, as the scheduler calls it, in "
        f"batches of 1,000 members per transaction. Baseline: a plain `SELECT id FROM member` streaming "
        f"every id on the same database in the same process. Peak RSS is the process's VmHWM. Targets: "
        f"< {TARGET_S:.0f} s, RSS < {TARGET_RSS_MB:.0f} MB."),
        "",
        (f"Measured {datetime.now(UTC).date().isoformat()} on nproc {_nproc()} ({platform.machine()}), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.system()}.")
    ])


def _nproc() -> int:
    import os

    return len(os.sched_getaffinity(0))


def write_readme(block: str) -> None:
    """Replace (or add, after the search block) the digest block of README.md."""
    text = README.read_text()
    inner = f"{START}\n{block}\n{END}"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + inner + rest.split(END, 1)[1]
    elif AFTER in text:
        text = text.replace(AFTER, f"{AFTER}\n\n{inner}", 1)
    else:
        text = text.rstrip("\n") + f"\n\n{inner}\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Generate, then measure in a child process, then print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=400_000, help="mutual connections")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.batch)))
        return 0
    from storage.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/digest.db"
        Database(url).upgrade_sync()
        t0 = time.perf_counter()
        gen = generate(f"{tmp}/digest.db", args.members, args.pairs, args.seed)
        print(f"generated in {time.perf_counter() - t0:.1f} s: {gen}", file=sys.stderr)
        out = subprocess.run([sys.executable, "-m", "bench.digest_run", "--measure", url, "--batch",
                              str(args.batch)], check=False, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        m = json.loads(out.stdout.strip().splitlines()[-1])
    print(m["summary"], "/ again:", m["again"], file=sys.stderr)
    block = table(gen, m)
    print(block)
    if not args.no_readme:
        write_readme(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
