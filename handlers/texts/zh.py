"""中文文案。"""

TEXTS: dict[str, str] = {
    "welcome": (
        "欢迎来到引荐：通过真正认识的人，获得可信的引荐。\n"
        "在这里保存一张私密名片，连接你真正认识的人，并通过共同好友请求双向同意的引荐。"
        "未经双方同意，你的任何信息都不会出现在陌生人面前。\n"
        "发送“帮助”查看可以做什么。(English: send help)"
    ),
    "welcome_back": "欢迎回到引荐，你的账号已恢复。发送“帮助”查看命令。",
    "help_header": "可用命令（也可以用英文，开头的 / 可有可无）：",
    "help_line": "{usage} — {summary}",
    "help_footer": "Send lang en for English / 发送 lang en 切换英文。",
    "summary_help": "列出所有命令",
    "summary_lang": "回复语言：语言 中文 或 语言 英文",
    "unknown": "抱歉，没看懂“{text}”。发送“帮助”查看所有命令。(English: send help)",
    "unknown_empty": "发送“帮助”看看我能做什么。",
    "not_text": "目前只能读取文字消息。发送“帮助”查看所有命令。",
    "lang_set": "好的，之后我会用中文回复。",
    "lang_usage": "用法：语言 中文 或 语言 英文（lang zh / lang en）。",
    "error": "抱歉，我们这边出了点问题，请稍后再试。",
    "chat_banner": "以 {user} 的身份与引荐对话。输入“帮助”查看命令，输入 :q 退出。",
    "away_header": "你不在时：",
}
