"""The two baseline webhook servers the bot is measured against, one per process.

    python -m bench.baselines bare --port 8081
    python -m bench.baselines echo --port 8082 --token T --app-id APPID --aes-key KEY43

`bare` answers `success` to every POST: the cost of aiohttp itself. `echo` does with wechatpy
alone what any safe-mode webhook must do (check the signatures, decrypt, parse, encrypt a text
reply) and nothing else: no storage, no dispatcher, no handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

PATH = "/wechat"


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def bare_app() -> web.Application:
    """Baseline 1: aiohttp answering `success` to every POST."""

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")

    app = web.Application()
    app.router.add_post(PATH, receive)
    app.router.add_get("/healthz", _healthz)
    return app


def echo_app(token: str, app_id: str, aes_key: str) -> web.Application:
    """Baseline 2: wechatpy verifies, decrypts, parses and encrypts a reply echoing the text."""
    crypto = WeChatCrypto(token, aes_key, app_id)

    async def receive(request: web.Request) -> web.Response:
        q = request.query
        body = await request.read()
        try:
            check_signature(token, q["signature"], q["timestamp"], q["nonce"])
            inner = crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
        except (KeyError, InvalidSignatureException):
            return web.Response(status=403, text="bad signature")
        msg = parse_message(inner)
        content = str(getattr(msg, "content", "") or "")
        reply = TextReply(message=msg, content=content).render()
        return web.Response(text=crypto.encrypt_message(reply, q["nonce"]),
                            content_type="application/xml")

    app = web.Application()
    app.router.add_post(PATH, receive)
    app.router.add_get("/healthz", _healthz)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run one baseline server until it is terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=["bare", "echo"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--app-id", default="")
    parser.add_argument("--aes-key", default="")
    args = parser.parse_args(argv)
    if args.kind == "echo" and not (args.token and args.app_id and args.aes_key):
        parser.error("echo needs --token, --app-id and --aes-key")
    app = bare_app() if args.kind == "bare" else echo_app(args.token, args.app_id, args.aes_key)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
