"""Search benchmark: `find` to the 3rd degree on a generated network, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.search_load                       # 100,000 members, 1,000,000 connections
    .venv/bin/python -m bench.search_load --members 20000 --connections 200000 --no-postgres --no-readme

Generates members with realistic Chinese and English cards and a random graph with locality
(most ties between members close on a ring, some anywhere), loads it with the driver's bulk
paths (executemany in one transaction on SQLite, COPY on PostgreSQL), then runs one-word `find`
queries from random members through `storage.search.find` and `store_results`, exactly as the
handler does, one transaction each. The baseline, measured on the same database in the same run,
is a plain indexed SELECT of one member's 1st-degree contacts. Each backend runs in a child
process, so its peak RSS (VmHWM) is its own. Not a test: it exits 0 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench:search:start -->", "<!-- bench:search:end -->"
AFTER = "<!-- bench:webhook:end -->"
PG_URL = os.environ.get("YINJIAN_BENCH_PG_URL", "postgresql://127.0.0.1:5432/test")
TARGET_P95_MS, TARGET_LOAD_S, TARGET_RSS_MB = 50.0, 120.0, 300.0
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
         "秀英", "霞", "平", "刚", "桂英", "晓东", "志强", "海燕", "建华", "文博", "子涵", "雨桐", "浩然"]
EN_FIRST = ["Alice", "Ben", "Chloe", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kevin",
            "Lily", "Michael", "Nina", "Oscar", "Peter", "Queenie", "Ryan", "Sophie", "Tom", "Vivian", "William"]
EN_LAST = ["Wang", "Li", "Zhang", "Chen", "Liu", "Smith", "Brown", "Lee", "Wong", "Ng", "Tan", "Lim", "Müller"]
TITLES_ZH = ["律师", "合伙人律师", "律师事务所合伙人", "投资经理", "天使投资人", "投资总监", "产品经理", "高级产品经理",
             "软件工程师", "算法工程师", "数据分析师", "财务总监", "人力资源经理", "市场总监", "主治医生", "设计师",
             "创始人", "首席执行官", "销售经理", "注册会计师", "咨询顾问", "研究员", "教授", "记者", "建筑师"]
TITLES_EN = ["Lawyer", "Partner", "Investment Manager", "Angel Investor", "Product Manager", "Software Engineer",
             "Data Scientist", "CFO", "HR Manager", "Marketing Director", "Doctor", "UX Designer", "Founder",
             "CEO", "Sales Director", "Accountant", "Consultant", "Researcher", "Professor", "Architect"]
COMPANIES = ["腾讯", "阿里巴巴", "字节跳动", "金杜律师事务所", "中伦律师事务所", "红杉资本", "华为", "美团", "京东",
             "小米", "百度", "中金公司", "招商银行", "平安保险", "协和医院", "McKinsey", "Goldman Sachs",
             "Microsoft", "Google", "Deloitte", "PwC", "KPMG", "ByteDance", "Tencent", "Alibaba"]
CITIES = ["北京", "上海", "深圳", "杭州", "广州", "成都", "南京", "武汉", "西安", "苏州", "Beijing", "Shanghai",
          "Shenzhen", "Hong Kong", "Singapore"]
INDUSTRIES = ["互联网", "金融", "法律", "医疗健康", "教育", "制造业", "房地产", "咨询", "媒体", "新能源",
              "Internet", "Finance", "Legal", "Healthcare", "Education", "Consulting"]
OFFERS = ["融资", "法律咨询", "招聘", "市场营销", "产品设计", "数据分析", "知识产权", "跨境电商", "税务筹划",
          "人工智能", "fundraising", "hiring", "legal advice", "UX design", "machine learning", "go-to-market"]
BIOS = ["{n}年{industry}经验，专注{offer}。", "在{city}做{industry}，可以帮忙{offer}。",
        "{n} years in {industry}, focused on {offer}.", "Based in {city}; happy to help with {offer}."]
QUERIES = ["律师", "投资", "工程师", "产品", "上海", "北京", "金融", "融资", "医生", "设计", "咨询", "教授",
           "lawyer", "investor", "engineer", "product", "shanghai", "finance", "design", "consultant"]


def generate_card(rng: random.Random) -> dict[str, Any]:
    """One realistic card, about two thirds Chinese and one third English."""
    if rng.random() < 0.67:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN)
        title = rng.choice(TITLES_ZH)
    else:
        name = f"{rng.choice(EN_FIRST)} {rng.choice(EN_LAST)}"
        title = rng.choice(TITLES_EN)
    industry, city = rng.choice(INDUSTRIES), rng.choice(CITIES)
    offers = rng.sample(OFFERS, rng.randint(0, 3))
    bio = rng.choice(BIOS).format(n=rng.randint(2, 20), industry=industry, city=city,
                                  offer=rng.choice(OFFERS)) if rng.random() < 0.6 else None
    return {"name": name, "title": title, "company": rng.choice(COMPANIES), "city": city,
            "industry": industry, "offers": offers, "needs": [], "bio": bio,
            "contact": f"wx_{rng.randrange(10**8):08d}"}


def generate_pairs(members: int, pairs: int, rng: random.Random) -> Iterator[tuple[int, int, int | None, int | None]]:
    """Mutual pairs (a, b, a→b strength, b→a strength): 85% near on a ring, 15% anywhere."""
    seen: set[int] = set()
    made = 0
    while made < pairs:
        a = rng.randrange(members)
        b = (a + rng.randint(1, 150)) % members if rng.random() < 0.85 else rng.randrange(members)
        if a == b:
            continue
        key = min(a, b) * members + max(a, b)
        if key in seen:
            continue
        seen.add(key)
        made += 1
        yield a + 1, b + 1, _strength(rng), _strength(rng)


def _strength(rng: random.Random) -> int | None:
    roll = rng.random()
    return None if roll < 0.3 else 1 if roll < 0.6 else 2 if roll < 0.85 else 3


def vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------- loading

def _rows(members: int, connections: int, seed: int) -> dict[str, Any]:
    """Row generators for every table, in insertion order; cards are tokenized as `save` does."""
    from storage.search import card_tokens

    created = NOW - timedelta(days=30)

    def member_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, members + 1):
            yield i, "mp", f"bench{i}", "zh", "active", created

    def cards() -> Iterator[dict[str, Any]]:
        # Generated twice from the same seed (cards, then their words) rather than kept: 100,000
        # cards held as dicts would cost more memory than the whole search does.
        rng = random.Random(seed)
        for _ in range(members):
            yield generate_card(rng)

    def card_rows() -> Iterator[tuple[Any, ...]]:
        for i, c in enumerate(cards(), start=1):
            yield (i, c["name"], c["title"], c["company"], c["city"], c["industry"],
                   json.dumps(c["offers"], ensure_ascii=False), "[]", c["bio"], c["contact"], created)

    def token_rows() -> Iterator[tuple[Any, ...]]:
        for i, c in enumerate(cards(), start=1):
            for token, weight in card_tokens(c).items():
                yield i, token, weight

    settings_rng = random.Random(seed + 1)

    def settings_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, members + 1):
            roll = settings_rng.random()
            if roll < 0.05:  # 3% stealth, 2% paused: the filters have work to do
                yield i, "{}", roll < 0.03, (NOW + timedelta(days=5)) if roll >= 0.03 else None

    numbers: dict[int, int] = {}

    def number(member_id: int) -> int:
        numbers[member_id] = numbers.get(member_id, 0) + 1
        return numbers[member_id]

    def connection_rows() -> Iterator[tuple[Any, ...]]:
        for a, b, ab, ba in generate_pairs(members, connections // 2, random.Random(seed + 2)):
            yield a, b, ab, "invite", created, number(a)
            yield b, a, ba, "invite", created, number(b)

    return {"member": (("id", "platform", "openid", "lang", "status", "created_at"), member_rows()),
            "card": (("member_id", "name", "title", "company", "city", "industry", "offers", "needs",
                      "bio", "contact", "updated_at"), card_rows()),
            "member_settings": (("member_id", "visibility", "stealth", "paused_until"), settings_rows()),
            "connection": (("member_id", "contact_id", "strength", "source", "created_at", "number"),
                           connection_rows()),
            # After the connections, so that every number they handed out is counted.
            "contact_seq": (("member_id", "last"), ((m, n) for m, n in numbers.items())),
            "search_token": (("member_id", "token", "weight"), token_rows())}


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return v


def _chunks(rows: Iterator[tuple[Any, ...]], size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_sqlite(path: str, members: int, connections: int, seed: int) -> dict[str, int]:
    """executemany in one transaction, journal off while loading (a fresh file; a crash loses nothing)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    counts: dict[str, int] = {}
    conn.execute("BEGIN")
    for table, (columns, rows) in _rows(members, connections, seed).items():
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for chunk in _chunks(rows):
            conn.executemany(sql, [tuple(_sqlite_value(v) for v in row) for row in chunk])
            counts[table] = counts.get(table, 0) + len(chunk)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return counts


def load_postgres(url: str, members: int, connections: int, seed: int) -> dict[str, int]:
    """COPY into every table in one transaction, then ANALYZE."""
    import psycopg

    counts: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            for table, (columns, rows) in _rows(members, connections, seed).items():
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([v.replace(tzinfo=None) if isinstance(v, datetime) else v
                                        for v in row])
                        counts[table] = counts.get(table, 0) + 1
            cur.execute("SELECT setval(pg_get_serial_sequence('member', 'id'), (SELECT max(id) FROM member))")
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return counts


# ---------------------------------------------------------------- measuring

def measure(url: str, members: int, queries: int, seed: int) -> dict[str, Any]:
    """p50/p95 of find (as the handler runs it) and of the baseline, from the same random members."""
    from storage import search
    from storage.db import Database
    from storage.sql import RawStatement

    db = Database(url)
    rng = random.Random(seed + 3)
    work = [(rng.randrange(1, members + 1), rng.choice(QUERIES)) for _ in range(queries)]
    baseline_stmt = RawStatement("SELECT contact_id, strength FROM connection WHERE member_id = ?")

    def run_find(session: Any, viewer: int, word: str) -> int:
        outcome = search.find(session, viewer_id=viewer, query=word, now=NOW)
        search.store_results(session, member_id=viewer, hits=[f.hit for f in outcome.found], now=NOW)
        return len(outcome.found)

    def run_baseline(session: Any, viewer: int) -> int:
        return len(baseline_stmt.execute(session, (viewer,)).fetchall())

    for viewer, word in work[:20]:  # warm-up: caches, the jieba dictionary, prepared plans
        db.transaction(run_find, viewer, word)
        db.transaction(run_baseline, viewer)
    find_ms, base_ms, results = [], [], []
    for viewer, word in work:
        t0 = time.perf_counter()
        results.append(db.transaction(run_find, viewer, word))
        t1 = time.perf_counter()
        db.transaction(run_baseline, viewer)
        t2 = time.perf_counter()
        find_ms.append((t1 - t0) * 1000)
        base_ms.append((t2 - t1) * 1000)
    db.dispose_sync()
    return {"find_p50": statistics.median(find_ms), "find_p95": pct(find_ms, 95),
            "base_p50": statistics.median(base_ms), "base_p95": pct(base_ms, 95),
            "results_avg": statistics.mean(results), "empty": sum(1 for r in results if r == 0)}


def child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """One backend, in this process: schema, load, measure."""
    from storage.db import Database

    tmp = tempfile.TemporaryDirectory(prefix="yinjian-search-bench-")
    schema = ""
    if backend == "sqlite":
        url = f"sqlite:///{tmp.name}/bench.db"
    else:
        import psycopg

        schema = "bench_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        db = Database(url)
        db.upgrade_sync()
        db.dispose_sync()
        t0 = time.perf_counter()
        if backend == "sqlite":
            counts = load_sqlite(f"{tmp.name}/bench.db", args.members, args.connections, args.seed)
        else:
            from sqlalchemy.engine import make_url

            from storage.db import sync_url

            u = make_url(sync_url(url)).set(drivername="postgresql")
            counts = load_postgres(u.render_as_string(hide_password=False), args.members,
                                   args.connections, args.seed)
        load_s = time.perf_counter() - t0
        figures = measure(url, args.members, args.queries, args.seed)
    finally:
        if schema:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        tmp.cleanup()
    return {"backend": backend, "load_s": load_s, "counts": counts, "rss_mb": vm_hwm_mb(), **figures}


# ---------------------------------------------------------------- report

def verdict(r: dict[str, Any]) -> str:
    """PASS/FAIL per target."""
    parts = [f"p95 {'PASS' if r['find_p95'] < TARGET_P95_MS else 'FAIL'}",
             f"load {'PASS' if r['load_s'] < TARGET_LOAD_S else 'FAIL'}",
             f"RSS {'PASS' if r['rss_mb'] < TARGET_RSS_MB else 'FAIL'}"]
    return ", ".join(parts)


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The README table, with how it was measured."""
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    lines = [("| backend | load s | find p50 ms | find p95 ms | baseline p50 ms | baseline p95 ms "
              "| find p95 vs baseline p95 | peak RSS MB | results/query | target |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {names[r['backend']]} | {r['load_s']:.1f} | {r['find_p50']:.1f} | {r['find_p95']:.1f} "
            f"| {r['base_p50']:.2f} | {r['base_p95']:.2f} | {r['find_p95'] / r['base_p95']:.0f}× "
            f"| {r['rss_mb']:.0f} | {r['results_avg']:.1f} | {verdict(r)} |")
    counts = results[0]["counts"]
    lines += [
        "",
        (f"{counts['member']:,} members, {counts['connection']:,} connection rows ({counts['connection'] // 2:,} "
        f"mutual pairs: 85% between members near each other on a ring, 15% anywhere; strengths 30% unrated, "
        f"else 1-3), {counts['search_token']:,} index words from generated Chinese and English cards, "
        f"3% stealth, 2% paused. {args.queries} one-word `find` queries (e.g. 律师, 投资, lawyer) from random "
        "members, each one transaction through `storage.search.find` + `store_results` as the handler runs "
        "them, after 20 warm-up queries. Baseline: a plain indexed `SELECT` of the same member's 1st-degree "
        "contacts on the same database. Load: bulk insert of all tables including the word index "
        "(executemany in one transaction on SQLite, COPY on PostgreSQL) plus ANALYZE; tokenizing the cards "
        "with jieba is inside the load time. Each backend runs in its own process; peak RSS is its VmHWM "
        "(the PostgreSQL server's own memory is not included). Targets: find p95 < 50 ms, load < 2 min, "
        "RSS < 300 MB."),
        "",
        (f"Measured {datetime.now():%Y-%m-%d} on nproc {os.cpu_count()} ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.system()}."),
    ]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    """Replace the block between the markers; add the markers after the webhook block if missing."""
    readme = README.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in readme and END in readme:
        readme = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: block, readme, flags=re.DOTALL)
    elif AFTER in readme:
        readme = readme.replace(AFTER, f"{AFTER}\n\n{block}", 1)
    else:
        readme = readme.rstrip("\n") + f"\n\n{block}\n"
    README.write_text(readme)


def main(argv: list[str] | None = None) -> int:
    """Run each backend in a child process, print the table, write it into README.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=1_000_000, help="directed rows (2 per pair)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--child", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    results = []
    for backend in ["sqlite"] + ([] if args.no_postgres else ["postgresql"]):
        cmd = [sys.executable, "-m", "bench.search_load", "--child", backend, "--members", str(args.members),
               "--connections", str(args.connections), "--queries", str(args.queries), "--seed", str(args.seed)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['backend']}: load {r['load_s']:.1f} s, find p50 {r['find_p50']:.1f} ms p95 {r['find_p95']:.1f} ms, "
              f"baseline p95 {r['base_p95']:.2f} ms, RSS {r['rss_mb']:.0f} MB, {r['results_avg']:.1f} results/query "
              f"({r['empty']} empty) — {verdict(r)}", flush=True)
        results.append(r)
    text = table(results, args)
    print()
    print(text)
    if not args.no_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
