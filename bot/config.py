"""Configuration: TOML file, environment overrides, validation with one clear error line."""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from platformdirs import user_data_dir

DEFAULT_API_BASE_URL = "https://api.weixin.qq.com"
DEFAULT_WECOM_API_BASE_URL = "https://qyapi.weixin.qq.com"
ENV_PREFIX = "YINJIAN_"
_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")


class ConfigError(Exception):
    """An operator mistake in the configuration; the message names the setting."""


@dataclass(frozen=True)
class ServerConfig:
    """[server]: where the webhook listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    # The address members' links point at (export links); empty means http://host:port.
    public_url: str = ""

    @property
    def base_url(self) -> str:
        """Where links to this server start."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def default_db_url() -> str:
    """The embedded default: yinjian.db in the user's data folder, the same from any folder."""
    return f"sqlite:///{Path(user_data_dir('yinjian')).absolute() / 'yinjian.db'}"


@dataclass(frozen=True)
class StorageConfig:
    """[storage]: the database URL (SQLite or PostgreSQL); empty means the embedded default."""

    url: str = field(default_factory=default_db_url)


@dataclass(frozen=True)
class WeChatConfig:
    """[wechat]: the Official Account's server settings and API credentials."""

    path: str = "/wechat"
    token: str = ""
    app_id: str = ""
    app_secret: str = ""
    encoding_aes_key: str = ""
    api_base_url: str = DEFAULT_API_BASE_URL
    max_clock_skew_seconds: int = 300

    @property
    def api_configured(self) -> bool:
        """True when outbound messages can really be sent through the WeChat API."""
        return bool(self.app_id and self.app_secret)

    @property
    def safe_mode_possible(self) -> bool:
        """True when an EncodingAESKey is set, so compatible and safe mode pushes can be read."""
        return bool(self.encoding_aes_key)


@dataclass(frozen=True)
class TemplatesConfig:
    """[wechat.templates]: template message ids approved in the Official Account's backend."""

    # Tells a member outside the 48-hour window that messages wait; empty means they just wait.
    notice: str = ""


@dataclass(frozen=True)
class SchedulerConfig:
    """[scheduler]: whether `serve` runs scheduled jobs, and the default time zone."""

    enabled: bool = True
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True)
class InvitesConfig:
    """[invites]: how long an invite code lives and how many people may use it."""

    ttl_days: int = 7
    max_uses: int = 1


@dataclass(frozen=True)
class PrivacyConfig:
    """[privacy]: how long an unsubscribed member's data is kept before it is deleted."""

    deletion_grace_days: int = 7


@dataclass(frozen=True)
class WeComConfig:
    """[wecom]: the WeCom self-built app (自建应用); on when corp_id is set."""

    path: str = "/wecom"
    corp_id: str = ""
    agent_id: int = 0
    secret: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    api_base_url: str = DEFAULT_WECOM_API_BASE_URL
    # An introduction both sides accept on WeCom opens a group chat of the three of them.
    intro_group: bool = True

    @property
    def enabled(self) -> bool:
        """True when the WeCom app is configured (corp_id set)."""
        return bool(self.corp_id)


@dataclass(frozen=True)
class Config:
    """The whole configuration of one Yinjian process."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    wechat: WeChatConfig = field(default_factory=WeChatConfig)
    wechat_templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    invites: InvitesConfig = field(default_factory=InvitesConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    wecom: WeComConfig = field(default_factory=WeComConfig)
    source: str = "embedded default"
    dev_token: bool = False


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "storage": StorageConfig,
    "wechat": WeChatConfig,
    "wechat.templates": TemplatesConfig,  # a sub-table of [wechat]
    "scheduler": SchedulerConfig,
    "invites": InvitesConfig,
    "privacy": PrivacyConfig,
    "wecom": WeComConfig,
}


def _coerce(section: str, key: str, raw: Any, target: type[Any], from_env: bool) -> Any:
    name = f"{section}.{key}"
    if target is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return raw.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    if target is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name} must be a whole number, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if from_env and isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            return int(raw)
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    if not isinstance(raw, str):
        raise ConfigError(f"{name} must be a string, got {raw!r}")
    return raw


def _field_types(cls: type[Any]) -> dict[str, type[Any]]:
    hints = {"str": str, "int": int, "bool": bool}
    return {f.name: hints[str(f.type)] for f in fields(cls)}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply YINJIAN_<SECTION>__<KEY> overrides, validate."""
    env = os.environ if env is None else env
    if path is None and env.get("YINJIAN_CONFIG"):
        path = env["YINJIAN_CONFIG"]
    data: dict[str, Any] = {}
    source = "embedded default"
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {p} cannot be read: {exc.strerror}") from None
        source = str(p)

    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    tables: list[tuple[str, Any]] = []
    for section, content in data.items():
        if section not in _SECTIONS or "." in section:
            raise ConfigError(f"unknown section [{section}] in {source}")
        if not isinstance(content, dict):
            raise ConfigError(f"[{section}] must be a table")
        content = dict(content)
        for sub in [k for k in content if f"{section}.{k}" in _SECTIONS]:
            tables.append((f"{section}.{sub}", content.pop(sub)))
        tables.append((section, content))
    for section, content in tables:
        if not isinstance(content, dict):
            raise ConfigError(f"[{section}] must be a table")
        types = _field_types(_SECTIONS[section])
        for key, raw in content.items():
            if key not in types:
                raise ConfigError(f"unknown key {section}.{key} in {source}")
            values[section][key] = _coerce(section, key, raw, types[key], from_env=False)

    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var or var == "YINJIAN_CONFIG":
            continue
        section, _, key = var[len(ENV_PREFIX):].partition("__")
        section, key = section.lower(), key.lower()
        if "__" in key:  # a sub-table: YINJIAN_WECHAT__TEMPLATES__NOTICE
            sub, _, key = key.partition("__")
            section = f"{section}.{sub}"
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section in environment variable {var}")
        types = _field_types(_SECTIONS[section])
        if key not in types:
            raise ConfigError(f"unknown key {section}.{key} in environment variable {var}")
        values[section][key] = _coerce(section, key, raw, types[key], from_env=True)

    if not values["storage"].get("url"):
        values["storage"].pop("url", None)  # `url = ""` in a copied example: the default
    cfg = Config(
        server=ServerConfig(**values["server"]),
        storage=StorageConfig(**values["storage"]),
        wechat=WeChatConfig(**values["wechat"]),
        wechat_templates=TemplatesConfig(**values["wechat.templates"]),
        scheduler=SchedulerConfig(**values["scheduler"]),
        invites=InvitesConfig(**values["invites"]),
        privacy=PrivacyConfig(**values["privacy"]),
        wecom=WeComConfig(**values["wecom"]),
        source=source,
    )
    cfg = _validate(cfg)
    if not cfg.wechat.token:
        # The embedded default: a development token, fresh per start, printed in the log.
        cfg = replace(cfg, wechat=replace(cfg.wechat, token="dev" + secrets.token_hex(8)), dev_token=True)
    return cfg


def _validate(cfg: Config) -> Config:
    s, w, st, sc = cfg.server, cfg.wechat, cfg.storage, cfg.scheduler
    if not 0 < s.port < 65536:
        raise ConfigError(f"server.port must be between 1 and 65535, got {s.port}")
    if not s.host:
        raise ConfigError("server.host must not be empty")
    scheme = st.url.split(":", 1)[0].lower()
    if scheme not in {"sqlite", "postgresql", "postgres"} and not scheme.startswith(("sqlite+", "postgresql+")):
        raise ConfigError(f"storage.url must be a sqlite:/// or postgresql:// URL, got {st.url!r}")
    if not w.path.startswith("/"):
        raise ConfigError(f"wechat.path must start with '/', got {w.path!r}")
    if w.encoding_aes_key and not _AES_KEY_RE.match(w.encoding_aes_key):
        raise ConfigError(
            "wechat.encoding_aes_key must be exactly 43 letters and digits "
            f"(got {len(w.encoding_aes_key)} characters); leave it empty for plain mode"
        )
    if w.encoding_aes_key and not w.app_id:
        raise ConfigError("wechat.app_id must be set when wechat.encoding_aes_key is set")
    if w.app_secret and not w.app_id:
        raise ConfigError("wechat.app_id must be set when wechat.app_secret is set")
    if w.token and not re.fullmatch(r"[A-Za-z0-9]{3,32}", w.token):
        raise ConfigError("wechat.token must be 3 to 32 letters and digits, as WeChat requires")
    if w.token.lower() in {"changeme", "your_token", "token"}:
        raise ConfigError("wechat.token is still a placeholder; choose your own")
    if not w.api_base_url.startswith(("http://", "https://")):
        raise ConfigError(f"wechat.api_base_url must be an http(s) URL, got {w.api_base_url!r}")
    if w.max_clock_skew_seconds < 0:
        raise ConfigError("wechat.max_clock_skew_seconds must be 0 (off) or more")
    if s.public_url and not s.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"server.public_url must be an http(s) URL, got {s.public_url!r}")
    if not 1 <= cfg.invites.ttl_days <= 30:
        raise ConfigError(f"invites.ttl_days must be between 1 and 30, got {cfg.invites.ttl_days}")
    if cfg.invites.max_uses < 1:
        raise ConfigError(f"invites.max_uses must be 1 or more, got {cfg.invites.max_uses}")
    if cfg.privacy.deletion_grace_days < 0:
        raise ConfigError("privacy.deletion_grace_days must be 0 or more")
    _validate_wecom(cfg.wecom, w)
    try:
        ZoneInfo(sc.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"scheduler.timezone is not a known time zone: {sc.timezone!r}") from None
    return cfg


# Every key a working WeCom app needs; a section with some but not all of them is a mistake.
_WECOM_REQUIRED = ("corp_id", "agent_id", "secret", "token", "encoding_aes_key")


def _validate_wecom(wc: WeComConfig, w: WeChatConfig) -> None:
    given = [k for k in _WECOM_REQUIRED if getattr(wc, k)]
    if not given:
        return
    missing = [k for k in _WECOM_REQUIRED if not getattr(wc, k)]
    if missing:
        raise ConfigError(f"wecom.{missing[0]} must be set: the [wecom] section has "
                          f"{', '.join('wecom.' + k for k in given)} but not "
                          f"{', '.join('wecom.' + k for k in missing)}")
    if wc.agent_id < 0:
        raise ConfigError(f"wecom.agent_id must be the app's AgentId (a positive number), got {wc.agent_id}")
    if not re.fullmatch(r"[A-Za-z0-9]{3,32}", wc.token):
        raise ConfigError("wecom.token must be 3 to 32 letters and digits, as WeCom requires")
    if not _AES_KEY_RE.match(wc.encoding_aes_key):
        raise ConfigError("wecom.encoding_aes_key must be exactly 43 letters and digits "
                          f"(got {len(wc.encoding_aes_key)} characters)")
    if not wc.path.startswith("/"):
        raise ConfigError(f"wecom.path must start with '/', got {wc.path!r}")
    if wc.path == w.path:
        raise ConfigError(f"wecom.path and wechat.path must differ (both are {wc.path!r})")
    if not wc.api_base_url.startswith(("http://", "https://")):
        raise ConfigError(f"wecom.api_base_url must be an http(s) URL, got {wc.api_base_url!r}")
