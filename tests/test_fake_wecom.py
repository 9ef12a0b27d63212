"""The fake WeCom server is proven against the official WeCom vectors (WECHAT.md §1.4, Vectors C
and D), and the callback adapter reads the official sample end to end over HTTP."""

from __future__ import annotations

import aiohttp
import xmltodict

from bot.platforms.wecom.webhook import WeComCallbacks
from handlers.events import EventKind
from tests.fakes.wechat_server import decrypt, encrypt, signature
from tests.fakes.wecom_server import FakeWeComServer
from tests.wecom_kit import running_wecom_app

# Vector C: the official WeCom sample (sbzhu/weworkapi_python, callback/Sample.py).
C_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
C_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
C_CORP = "ww1436e0e65a779aee"
C_ECHOSTR = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
C_ENCRYPT = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNsh"
    "w2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010w"
    "sHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQ"
    "VDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
)
C_BODY = (f"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[{C_ENCRYPT}]]>"
          "</Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>")
C_PLAIN = ("<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
           "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
           "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>")
C_VERIFY = {"msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "timestamp": "1476416373",
            "nonce": "47744683", "echostr": C_ECHOSTR}
C_POST = {"msg_signature": "0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "timestamp": "1476422779",
          "nonce": "1597212914"}

# Vector D: wechatpy's own WeCom crypto tests (tests/test_crypto.py @v1.8.18).
D_TOKEN, D_KEY, D_CORP = "123456", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "wx49f0ab532d5d035a"
D_ECHOSTR = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
D_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv28"
    "3dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/"
    "nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqI"
    "rH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9"
    "QaNWHp91eBdCRxthuL0="
)
D_REPLY = """<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>"""
D_REPLY_ENCRYPT = (
    "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgU"
    "RnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXr"
    "x0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR"
    "5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3"
)


def test_vector_c_verify_url_exactly() -> None:
    assert signature(C_TOKEN, "1476416373", "47744683", C_ECHOSTR) == C_VERIFY["msg_signature"]
    plain, receive_id, random16 = decrypt(C_KEY, C_ECHOSTR)
    assert plain == "1288432023552776189" and receive_id == C_CORP
    assert encrypt(C_KEY, C_CORP, plain, random16) == C_ECHOSTR


def test_vector_c_decrypt_msg_exactly() -> None:
    assert signature(C_TOKEN, "1476422779", "1597212914", C_ENCRYPT) == C_POST["msg_signature"]
    message, receive_id, random16 = decrypt(C_KEY, C_ENCRYPT)
    assert message == C_PLAIN and receive_id == C_CORP
    assert encrypt(C_KEY, C_CORP, message, random16) == C_ENCRYPT


def test_the_fake_seals_vector_c_byte_for_byte() -> None:
    _, _, random16 = decrypt(C_KEY, C_ENCRYPT)
    fake = FakeWeComServer(url="", token=C_TOKEN, aes_key=C_KEY, corp_id=C_CORP, random16=lambda: random16)
    query, body = fake.seal(C_PLAIN, timestamp=1476422779, nonce="1597212914")
    assert query == C_POST
    assert xmltodict.parse(body)["xml"] == {"ToUserName": C_CORP, "Encrypt": C_ENCRYPT, "AgentID": "1000002"}
    _, _, echo_random16 = decrypt(C_KEY, C_ECHOSTR)
    fake.random16 = lambda: echo_random16
    assert fake.verify_query("1288432023552776189", timestamp=1476416373, nonce="47744683") == C_VERIFY


def test_vector_d_check_signature_decrypt_and_encrypt() -> None:
    assert signature(D_TOKEN, "1411443780", "437374425", D_ECHOSTR) == "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"
    plain, receive_id, _ = decrypt(D_KEY, D_ECHOSTR)
    assert plain == "5927782489442352469" and receive_id == D_CORP
    assert signature(D_TOKEN, "1411525903", "461056294", D_ENCRYPT) == "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
    message, receive_id, _ = decrypt(D_KEY, D_ENCRYPT)
    inner = xmltodict.parse(message)["xml"]
    assert receive_id == D_CORP and inner["Content"] == "test" and inner["FromUserName"] == "messense"
    enc = encrypt(D_KEY, D_CORP, D_REPLY, b"1234567890123456")
    assert enc == D_REPLY_ENCRYPT
    assert signature(D_TOKEN, "1411525903", "461056294", enc) == "407518b7649e86ef23978113f92d27afa9296533"


def test_vector_d_agrees_with_our_adapter() -> None:
    """The same ciphertexts through wechatpy, via the adapter, give the same plaintexts."""
    callbacks = WeComCallbacks(token=D_TOKEN, encoding_aes_key=D_KEY, corp_id=D_CORP, max_clock_skew_seconds=0)
    query = {"msg_signature": "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "timestamp": "1411443780",
             "nonce": "437374425", "echostr": D_ECHOSTR}
    assert callbacks.verify_url(query) == "5927782489442352469"
    body = (f"<xml><ToUserName><![CDATA[{D_CORP}]]></ToUserName>\n<Encrypt><![CDATA[{D_ENCRYPT}]]></Encrypt>\n"
            "<AgentID><![CDATA[1]]></AgentID>\n</xml>").encode()
    got = callbacks.read({"msg_signature": "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
                          "timestamp": "1411525903", "nonce": "461056294"}, body)
    assert got.event.kind is EventKind.TEXT and got.event.text == "test" and got.event.member_id == "messense"


async def test_vector_c_through_the_webhook_over_http() -> None:
    callbacks = WeComCallbacks(token=C_TOKEN, encoding_aes_key=C_KEY, corp_id=C_CORP, agent_id=1000002)
    clock = {"now": 1476416373.0}
    async with running_wecom_app(callbacks, now=lambda: clock["now"]) as app:
        async with aiohttp.ClientSession() as s, s.get(app.url, params=C_VERIFY) as resp:
            assert resp.status == 200 and await resp.text() == "1288432023552776189"
        clock["now"] = 1476422779.0
        fake = FakeWeComServer(url=app.url, token=C_TOKEN, aes_key=C_KEY, corp_id=C_CORP)
        answer = await fake.post_raw(C_POST, C_BODY)
        assert answer.status == 200 and answer.content == "echo: 你好"
        assert answer.reply is not None and answer.reply["ToUserName"] == "ChenJiaShun"
        assert answer.reply["FromUserName"] == C_CORP
        (callback,) = app.accepted
        assert callback.event.member_id == "ChenJiaShun" and callback.event.platform == "wecom"
        assert callback.event.dedupe_key == "wecom:msg:ChenJiaShun:1456453720"
        assert callback.agent_id == "1000002" and callback.corp_id == C_CORP
