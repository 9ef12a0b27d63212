"""The account menu: one declared list of buttons whose keys are our commands.

A tap on a button arrives as a click whose key is the command (WECHAT.md §3 CLICK, §8.2
click), and runs it as if typed. `yinjian menu push` lays the list out for each platform.
Menus are account-wide, not per member, so the labels are Chinese, the members' default, and
so are the commands: a member's first command decides their language, a first tap included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MenuButton:
    """One button: what it says and the command a tap runs."""

    label: str
    command: str


MENU: tuple[MenuButton, ...] = (
    MenuButton("我的名片", "名片"),
    MenuButton("找人", "找"),
    MenuButton("待处理", "待处理"),
    MenuButton("邀请", "邀请"),
    MenuButton("帮助", "帮助"),
)
# Both platforms allow 3 buttons at the top and 5 under each (WECHAT.md §3; WeCom's menu doc).
TOP_BUTTONS = 3
MORE_LABEL = "更多"


def layout(buttons: tuple[MenuButton, ...] = MENU) -> list[dict[str, Any]]:
    """The `button` list both platforms' menu/create take: the first ones on top, the rest under 更多."""
    def click(b: MenuButton) -> dict[str, Any]:
        return {"type": "click", "name": b.label, "key": b.command}

    if len(buttons) <= TOP_BUTTONS:
        return [click(b) for b in buttons]
    top = [click(b) for b in buttons[:TOP_BUTTONS - 1]]
    return top + [{"name": MORE_LABEL, "sub_button": [click(b) for b in buttons[TOP_BUTTONS - 1:]]}]
