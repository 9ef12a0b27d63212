"""The fake WeChat server is proven against the official vectors (WECHAT.md §1.4), and the
webhook reads an official push end to end."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import aiohttp

from scheduler.clock import FixedClock
from bot.config import load_config
from tests.botkit import running_bot
from tests.fakes.wechat_server import decrypt, encrypt, signature

A_TOKEN, A_KEY, A_APPID = "AAAAA", "A" * 43, "wxba5fad812f8e6fb9"
A_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDp"
    "VzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQr"
    "KEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUP"
    "AJGj04="
)


def test_vector_a_url_verification_signature() -> None:
    assert signature(A_TOKEN, "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


def test_vector_a_plain_post_signature() -> None:
    assert signature(A_TOKEN, "1714037059", "486452656") == "899cf89e464efb63f54ddac96b0a0a235f53aa78"


def test_vector_a_safe_post_decrypts_and_reencrypts_exactly() -> None:
    assert signature(A_TOKEN, "1714112445", "415670741", A_ENCRYPT) == "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
    assert signature(A_TOKEN, "1714112445", "415670741") == "6c5c811b55cc85e0e1b54100749188c20beb3f5d"
    message, app_id, random16 = decrypt(A_KEY, A_ENCRYPT)
    assert app_id == A_APPID and random16 == b"a8eedb185eb2fecf" and len(message.encode()) == 167
    assert json.loads(message)["CreateTime"] == 1714112445
    assert encrypt(A_KEY, A_APPID, message, random16) == A_ENCRYPT


def test_vector_a_encrypted_reply() -> None:
    enc = encrypt(A_KEY, A_APPID, '{"demo_resp":"good luck"}', b"707722b803182950")
    assert enc == "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
    assert signature(A_TOKEN, "1713424427", "415670741", enc) == "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"


async def test_vector_a_url_verification_through_the_webhook(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(None, env={"YINJIAN_WECHAT__TOKEN": A_TOKEN,
                                 "YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'a.db'}"})
    clock = FixedClock(datetime.fromtimestamp(1714036504, timezone.utc))
    async with running_bot(cfg, clock=clock, mode="plain") as bot:
        async with aiohttp.ClientSession() as s:
            params = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "echostr": "4375120948345356249",
                      "timestamp": "1714036504", "nonce": "1514711492"}
            async with s.get(bot.wechat.url, params=params) as resp:
                assert resp.status == 200 and await resp.text() == "4375120948345356249"
            params["signature"] = "0" * 40
            async with s.get(bot.wechat.url, params=params) as resp:
                assert resp.status == 403


B_BODY = (
    "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLz"
    "SIWZf0rs]]></FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Con"
    "tent><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6T"
    "vGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUA"
    "h0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3"
    "yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgC"
    "SUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCz"
    "pu9GhglF2PE=]]></Encrypt></xml>"
)


async def test_vector_b_official_compat_push_through_the_webhook(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(None, env={
        "YINJIAN_WECHAT__TOKEN": "spamtest", "YINJIAN_WECHAT__APP_ID": "wx2c2769f8efd9abc2",
        "YINJIAN_WECHAT__ENCODING_AES_KEY": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "YINJIAN_STORAGE__URL": f"sqlite:///{tmp_path / 'b.db'}"})
    clock = FixedClock(datetime.fromtimestamp(1409735669, timezone.utc))
    async with running_bot(cfg, clock=clock, mode="compat") as bot:
        query = {"signature": "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a", "timestamp": "1409735669",
                 "nonce": "1320562132", "encrypt_type": "aes",
                 "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa"}
        answer = await bot.wechat.post_raw(query, B_BODY)
        assert answer.status == 200
        assert answer.xml is not None and answer.xml["ToUserName"] == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
        assert "abcdteT" in (answer.content or "")  # unknown text gets a helpful answer naming it
        # The same official push again is a duplicate: same answer, handled once.
        again = await bot.wechat.post_raw(query, B_BODY)
        assert again.content == answer.content
