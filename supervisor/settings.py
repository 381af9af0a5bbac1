"""Settings: the environment's `START_ALL_*` variables (and PORT), validated by pydantic.

Every bad value is reported as a ConfigError whose message is one line naming the variable,
with a "did you mean" for a misspelt name. Building the plan from these is `config.py`;
how many processes run is `sizing.py`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "START_ALL_"
SIGNAL_NAMES = {"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL"}
PROCESS_FIELDS_PREFIX = ENV_PREFIX + "PROCESSES__"
# START_ALL_ names that are not start-all's settings, so that an exported one (in the shell
# that also runs docker-compose, say) is no "unknown setting"; every START_ALL_ name in the
# templates, examples and docs is a setting or listed here (tests/core/test_config.py).
OTHER_TOOLS_NAMES = {
    "START_ALL_IMAGE": "examples/docker-compose/*.yml: the image the services run",
    "START_ALL_TEST_LATEST": "scripts/test.sh: 0 skips the run on the newest releases",
    "START_ALL_DB_TIMEOUT": "set by the supervisor for its database probe child",
}
# Django settings (settings.py), read by the kit and the native worker, never the environment
DJANGO_SETTING_NAMES = ("START_ALL_SCHEDULES", "START_ALL_NATIVE_APP",
                        "START_ALL_SETTINGS_CHANGES")


class ConfigError(ValueError):
    """Bad input; the message is a single line naming the culprit."""


def _signal_name(value: str) -> str:
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in SIGNAL_NAMES:
        raise ValueError(f"unknown signal {value!r} (use one of {', '.join(sorted(SIGNAL_NAMES))})")
    return name


def _request_part(value: str | None, what: str) -> str | None:
    """A path or host that goes into an HTTP request line as is: no spaces, no new lines."""
    if value is None:
        return None
    if not value or any(c.isspace() or ord(c) < 32 for c in value) or len(value) > 1024:
        raise ValueError(f"{what} must be non-empty, without spaces or control characters")
    if what == "a path" and not value.startswith("/"):
        raise ValueError("a path must start with /")
    return value



class ProcessOverride(BaseModel):
    """Per-process settings: START_ALL_PROCESSES__<NAME>__<FIELD>=value."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    restart: Literal["always", "on-failure", "never"] | None = None
    required: bool | None = None
    stop_signal: str | None = None
    signal_target: Literal["main", "group"] | None = None
    role: Literal["web", "worker", "other"] | None = None

    _check_signal = field_validator("stop_signal")(
        lambda cls, v: None if v is None else _signal_name(v)
    )


class Settings(BaseSettings):
    """Every setting, read from the environment with the START_ALL_ prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        allow_inf_nan=False,  # STOP_TIMEOUT=nan is not a number, not "more than 3600"
    )

    procfile: Path | None = None
    env_file: Path | None = None
    worker: Literal["auto", "qcluster", "native", "celery", "none"] = "auto"
    wsgi_app: str | None = None
    worker_app: str | None = None
    stop_timeout: float = Field(8.0, gt=0, le=3600)
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    stable_after: float = Field(10.0, ge=0)
    crash_loop_count: int = Field(5, ge=1)
    crash_loop_window: float = Field(60.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_prefix: bool = True
    color: Literal["auto", "always", "never"] = "auto"
    check_port: bool = True
    processes: dict[str, ProcessOverride] = {}
    only: str | None = None  # roles from one image (supervisor/roles.py)
    release_role: str = "web"  # which container (by its --only set) runs release:
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("PORT"))
    # health (docs/health.md)
    health_port: int = Field(8081, ge=0, le=65535)  # 0: no TCP health server
    health_bind: str = "0.0.0.0"
    health_token: SecretStr | None = None  # read by PID 1 from its environment, never planned
    health_path: str = "/healthz"  # where the $PORT middlewares answer
    health_web_path: str | None = None  # HTTP GET probe of $PORT; unset: TCP connect
    health_interval: float = Field(2.0, gt=0, le=300)  # web/worker probes and memory
    # the application check (webprobe.py): a real page; 5xx -> /readyz 503, /healthz degraded
    web_probe_path: str | None = None
    web_probe_host: str = "localhost"  # the Host header: one the app accepts (ALLOWED_HOSTS)
    web_probe_timeout: float = Field(2.0, gt=0, le=60)
    health_db_interval: float = Field(30.0, gt=0, le=3600)
    health_db_timeout: float = Field(3.0, gt=0, le=60)
    health_socket: str | None = None  # set by the supervisor for its children
    health_url: str | None = None  # set by the supervisor for its children
    heartbeat_file: str | None = None  # the native worker's heartbeat (set for its children)
    heartbeat_interval: float = Field(5.0, gt=0, le=3600)
    # a transaction-mode pooler on another port than Supabase's 6543 (read by the native worker
    # and its producers, native/store.py): no LISTEN, no prepared statements through it
    transaction_pooler_port: int | None = Field(None, ge=1, le=65535)
    # resources (sizing.py, docs/health.md)
    sizing: Literal["auto", "off"] = "auto"
    worker_concurrency: int | None = Field(None, ge=1, le=1024)
    # the native worker's pool (read by it, native/cli.py); prefork children cost more memory
    worker_pool: Literal["threads", "thread", "solo", "prefork", "processes"] | None = None
    worker_max_rss_mb: int | None = Field(None, ge=1)
    watchdog_share: float = Field(0.5, ge=0, le=1)  # of the memory limit; 0: no watchdog
    watchdog_mb: int | None = Field(None, ge=1)

    @field_validator("web_probe_path")
    @classmethod
    def _probe_path(cls, value: str | None) -> str | None:
        return _request_part(value, "a path")

    @field_validator("web_probe_host")
    @classmethod
    def _probe_host(cls, value: str) -> str:
        return _request_part(value, "a host")


def known_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields if name != "port"}


def did_you_mean(given: str, known: list[str], prefix: str = "") -> str | None:
    """The closest known name, compared without the shared prefix (which matches anything)."""
    tails = {name[len(prefix):]: name for name in known}
    close = difflib.get_close_matches(given.upper()[len(prefix):], list(tails), n=1, cutoff=0.6)
    return tails[close[0]] if close else None


def unknown_setting(name: str, known: set[str]) -> ConfigError:
    """One line: the unknown name, and the closest known one when there is a plausible one."""
    close = did_you_mean(name, sorted(known), ENV_PREFIX)
    hint = f"did you mean {close}?" if close else "the settings are in README.md, docs/health.md"
    return ConfigError(f"unknown setting {name}: {hint}")


def load_settings(environ: Mapping[str, str], **overrides: object) -> Settings:
    """Settings from `environ` (normally os.environ) plus command-line overrides."""
    known = known_variables()
    environ = {k: v for k, v in environ.items() if k.upper() not in OTHER_TOOLS_NAMES}
    for key in environ:
        upper = key.upper()
        if upper in DJANGO_SETTING_NAMES:
            raise ConfigError(f"{key} is a Django setting (in settings.py), not an environment "
                              "variable")
        if upper.startswith(ENV_PREFIX) and upper not in known:
            if not upper.startswith(PROCESS_FIELDS_PREFIX):
                raise unknown_setting(key, known)
    try:
        return _settings_from(environ, {k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        location = [str(part) for part in first["loc"]]
        name = "PORT" if location == ["PORT"] else ENV_PREFIX + "__".join(location).upper()
        given = first.get("input")
        shown = f" (got {_short(given)!r})" if isinstance(given, str | int | float) else ""
        if first["type"] == "extra_forbidden" and location[0] == "processes":
            fields = [field.upper() for field in ProcessOverride.model_fields]
            close = did_you_mean(location[-1], fields)
            hint = f"did you mean {close}?" if close else f"one of {', '.join(fields)}"
            raise ConfigError(f"{name}: unknown field, {hint}") from None
        raise ConfigError(f"{name}: {first['msg']}{shown}") from None


def _short(value: object, limit: int = 80) -> object:
    """A value as shown in an error line: never a whole megabyte."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value)} characters)"
    return value


def _settings_from(environ: Mapping[str, str], overrides: dict) -> Settings:
    # pydantic-settings reads os.environ; swap in the mapping we were given for the duration.
    saved, wanted = dict(os.environ), dict(environ)
    try:
        os.environ.clear()
        os.environ.update(wanted)
        return Settings(**overrides)
    finally:
        os.environ.clear()
        os.environ.update(saved)
