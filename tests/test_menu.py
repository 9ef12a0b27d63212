"""`yinjian menu push`: one declared menu, set on the Official Account and the WeCom app."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.fake_api import APP_ID, APP_SECRET, FakeWeChatAPI
from tests.fakes.wecom_api import AGENT_ID, CORP_ID, SECRET, FakeWeComAPI
from tests.botkit import AES_KEY, make_config, running_bot

YINJIAN = str(Path(sys.executable).with_name("yinjian"))


async def menu_push(config: Path, home: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YINJIAN_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    proc = await asyncio.create_subprocess_exec(YINJIAN, "menu", "push", "--config", str(config), env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_menu_push_sets_both_menus_from_one_list(db_url: str, tmp_path: Path, fake_api: FakeWeChatAPI,
                                                       fake_wecom_api: FakeWeComAPI) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"""
[storage]
url = "{db_url}"
[wechat]
token = "menutoken1"
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
api_base_url = "{fake_api.base_url}"
[wecom]
corp_id = "{CORP_ID}"
agent_id = {AGENT_ID}
secret = "{SECRET}"
token = "menutoken2"
encoding_aes_key = "{AES_KEY}"
api_base_url = "{fake_wecom_api.base_url}"
""")
    code, out, err = await menu_push(config, tmp_path)
    assert code == 0, err
    assert "Official Account: menu set (我的名片, 找人, 更多)" in out
    assert f"WeCom app {AGENT_ID}: menu set" in out
    assert fake_api.menu == fake_wecom_api.menus[AGENT_ID]
    keys = [b["key"] for top in fake_api.menu for b in top.get("sub_button", [top])]
    assert keys == ["名片", "找", "待处理", "邀请", "帮助"]


async def test_every_menu_tap_runs_its_command_in_chinese(db_url: str) -> None:
    from handlers.menu import MENU
    from tests.botkit import event

    async with running_bot(make_config(db_url)) as bot:
        for button in MENU:
            answer = await event(bot, "o_tap", "CLICK", key=button.command)
            assert not answer.startswith(("抱歉", "Sorry")) and "没看懂" not in answer, (button, answer)
        assert (await event(bot, "o_tap", "CLICK", key="帮助")).startswith("可用命令")


async def test_menu_push_without_a_platform_says_what_to_configure(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    code, _, err = await menu_push(config, tmp_path)
    assert code == 2 and "configure wechat.app_id and wechat.app_secret, or the [wecom] section" in err
