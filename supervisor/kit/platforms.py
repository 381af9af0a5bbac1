"""The hosting platforms start-all ships a config file for, and what `check` knows about them.

Each platform sends SIGTERM (Fly: SIGINT by default) and kills the container after a grace
period of its own. start-all's whole stop (`START_ALL_STOP_TIMEOUT`, then 0.5 s at most to
exit) must fit inside it, or the platform's SIGKILL cuts the graceful stop short and a task
being finished is re-run later. The facts below are the platforms' documented defaults
(checked 2026-12); where a project file or the environment sets the grace, that value wins.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# start-all exits at most this long after its stop budget (runtime's hard deadline).
EXIT_MARGIN = 0.5


@dataclass(frozen=True)
class Grace:
    seconds: float | None  # None: the platform does not document it
    source: str  # where the value comes from, for the message


@dataclass(frozen=True)
class Platform:
    name: str
    title: str
    detect: tuple[str, ...]  # environment variables the platform sets in every container
    config_file: str  # written by `start-all init --platform NAME`
    template: str  # its source under templates/
    stop_timeout: int  # START_ALL_STOP_TIMEOUT the template sets
    grace: Callable[[Path, Mapping[str, str]], Grace]
    docs: str  # one line: how to change the grace

    def detected(self, environ: Mapping[str, str]) -> bool:
        return any(environ.get(name) for name in self.detect)


def _seconds(value: object) -> float | None:
    """A number of seconds, or a Go-style duration ("30s", "1m0s", "2m") as Fly accepts."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text)
        if parts and "".join(n + u for n, u in parts) == text:
            scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
            return sum(float(n) * scale[u] for n, u in parts)
    return None


def _fly_grace(project: Path, environ: Mapping[str, str]) -> Grace:
    path = project / "fly.toml"
    if path.is_file():
        try:
            value = _seconds(tomllib.loads(path.read_text()).get("kill_timeout"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            value = None
        if value is not None:
            return Grace(value, "fly.toml kill_timeout")
    return Grace(5.0, "Fly's default kill_timeout")


def _render_grace(project: Path, environ: Mapping[str, str]) -> Grace:
    path = project / "render.yaml"
    if path.is_file():
        # A regular expression, not a YAML parser: `check` must not need PyYAML.
        found = re.search(r"^\s*maxShutdownDelaySeconds:\s*[\"']?(\d+)", path.read_text(), re.M)
        if found:
            return Grace(float(found.group(1)), "render.yaml maxShutdownDelaySeconds")
    return Grace(30.0, "Render's default maxShutdownDelaySeconds")


def _railway_grace(project: Path, environ: Mapping[str, str]) -> Grace:
    value = _seconds(environ.get("RAILWAY_DEPLOYMENT_DRAINING_SECONDS", ""))
    if value is not None:
        return Grace(value, "RAILWAY_DEPLOYMENT_DRAINING_SECONDS")
    for name in ("railway.json", "railway.toml"):
        path = project / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
            data = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
        except (ValueError, UnicodeDecodeError):
            continue
        value = _seconds((data.get("deploy") or {}).get("drainingSeconds"))
        if value is not None:
            return Grace(value, f"{name} deploy.drainingSeconds")
    return Grace(0.0, "Railway's default draining time")


def _koyeb_grace(project: Path, environ: Mapping[str, str]) -> Grace:
    return Grace(None, "Koyeb does not document its grace period")


PLATFORMS: dict[str, Platform] = {
    p.name: p
    for p in (
        Platform(
            "koyeb",
            "Koyeb",
            # what Koyeb's control panel lists as its system environment
            ("KOYEB_APP_NAME", "KOYEB_SERVICE_NAME", "KOYEB_INSTANCE_ID"),
            "koyeb.json",
            "platforms/koyeb.json",
            8,
            _koyeb_grace,
            "not configurable; keep START_ALL_STOP_TIMEOUT at 8 s or less",
        ),
        Platform(
            "render",
            "Render",
            ("RENDER", "RENDER_SERVICE_ID"),
            "render.yaml",
            "platforms/render.yaml",
            25,
            _render_grace,
            "maxShutdownDelaySeconds in render.yaml (1-300, default 30)",
        ),
        Platform(
            "fly",
            "Fly.io",
            ("FLY_APP_NAME", "FLY_MACHINE_ID"),
            "fly.toml",
            "platforms/fly.toml",
            12,
            _fly_grace,
            "kill_timeout in fly.toml (default 5 s)",
        ),
        Platform(
            "railway",
            "Railway",
            ("RAILWAY_ENVIRONMENT_NAME", "RAILWAY_ENVIRONMENT", "RAILWAY_PROJECT_ID"),
            "railway.json",
            "platforms/railway.json",
            12,
            _railway_grace,
            "RAILWAY_DEPLOYMENT_DRAINING_SECONDS or deploy.drainingSeconds (default 0)",
        ),
    )
}
# With no documented grace, assume what Docker gives (10 s) and keep start-all's default.
UNDOCUMENTED_GRACE_LIMIT = 8.0


def detect(project: Path, environ: Mapping[str, str]) -> list[tuple[Platform, str]]:
    """The platforms this project runs on or is configured for, with how each was found."""
    found = []
    for platform in PLATFORMS.values():
        if platform.detected(environ):
            found.append((platform, "environment"))
        elif (project / platform.config_file).is_file() or (
            platform.name == "railway" and (project / "railway.toml").is_file()
        ):
            found.append((platform, platform.config_file))
    return found


def stop_budget_problem(
    platform: Platform, stop_timeout: float, project: Path, environ: Mapping[str, str]
) -> str | None:
    """Why the stop budget does not fit the platform's grace, or None when it does."""
    grace = platform.grace(project, environ)
    if grace.seconds is None:
        if stop_timeout > UNDOCUMENTED_GRACE_LIMIT:
            return (
                f"START_ALL_STOP_TIMEOUT={stop_timeout:g} s on {platform.title}: "
                f"{grace.source}; {platform.docs}"
            )
        return None
    if stop_timeout + EXIT_MARGIN > grace.seconds:
        return (
            f"START_ALL_STOP_TIMEOUT={stop_timeout:g} s exceeds {platform.title}'s grace "
            f"({grace.seconds:g} s, {grace.source}): the platform SIGKILLs the container "
            f"before the graceful stop ends; set {platform.docs.split(' (')[0]} above "
            f"{stop_timeout + EXIT_MARGIN:g} s or lower START_ALL_STOP_TIMEOUT"
        )
    return None


def fly_signal_problem(project: Path) -> str | None:
    """start-all stops gracefully on SIGTERM and SIGINT; any other kill_signal is a quick stop."""
    path = project / "fly.toml"
    if not path.is_file():
        return None
    try:
        signal = tomllib.loads(path.read_text()).get("kill_signal", "SIGINT")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return "fly.toml: not valid TOML"
    if str(signal).upper() not in ("SIGTERM", "SIGINT"):
        return (
            f"fly.toml kill_signal = {signal!r}: start-all stops gracefully only on SIGTERM "
            "or SIGINT; use kill_signal = \"SIGTERM\""
        )
    return None


def _stop_timeout(environ: Mapping[str, str]) -> float | None:
    try:
        return float(environ.get("START_ALL_STOP_TIMEOUT", "8"))
    except ValueError:
        return None  # start-all itself reports the bad value


def check(project: Path, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """`start-all check`'s platform findings, as (severity, message) pairs."""
    findings: list[tuple[str, str]] = []
    stop_timeout = _stop_timeout(environ)
    for platform, how in detect(project, environ):
        grace = platform.grace(project, environ)
        shown = "undocumented" if grace.seconds is None else f"{grace.seconds:g} s"
        findings.append(("ok", f"platform: {platform.title} (from {how}; grace {shown})"))
        if stop_timeout is not None:
            problem = stop_budget_problem(platform, stop_timeout, project, environ)
            if problem:
                findings.append(("warning", problem))
        if platform.name == "fly":
            problem = fly_signal_problem(project)
            if problem:
                findings.append(("warning", problem))
    return findings


SUPABASE_PAUSE = (
    "DATABASE_URL is a Supabase project: a free project is paused after 7 days without "
    "queries and stays down until restored in Supabase's dashboard; this container's worker "
    "queries it only while the container runs (a sleeping free instance sends nothing), "
    "see docs/platforms.md"
)


def is_supabase(host: str) -> bool:
    return host.endswith(".supabase.co") or host.endswith(".supabase.com")
