"""English texts."""

TEXTS: dict[str, str] = {
    "welcome": (
        "Welcome to Yinjian (引荐): warm introductions through people you really know.\n"
        "Keep a private card, connect with the people you know, and ask for introductions "
        "through mutual contacts. Nothing about you reaches a stranger unless both sides say yes.\n"
        "Send help to see what you can do."
    ),
    "welcome_back": "Welcome back to Yinjian. Your account is active again. Send help to see the commands.",
    "help_header": "Commands (Chinese works too; a leading / is optional):",
    "help_line": "{usage} — {summary}",
    "help_footer": "Send lang zh for Chinese / 发送 lang zh 切换中文.",
    "summary_help": "list the commands",
    "summary_lang": "reply language: lang en or lang zh",
    "unknown": "Sorry, I did not understand “{text}”. Send help to see the commands.",
    "unknown_empty": "Send help to see what I can do.",
    "not_text": "I can only read text messages for now. Send help to see the commands.",
    "lang_set": "From now on I will answer in English.",
    "lang_usage": "Usage: lang en (English) or lang zh (中文).",
    "error": "Sorry, something went wrong on our side. Please try again in a moment.",
    "chat_banner": "Chatting with Yinjian as {user}. Type help for the commands, :q to leave.",
    "away_header": "While you were away:",
}
