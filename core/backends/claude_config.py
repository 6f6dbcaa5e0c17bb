"""The claude backend's configuration: the task's ``[claude]`` table, where the CLI's
credentials come from, and the environment the CLI runs with (secrets kept from its
tools unless passed through on purpose)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shepherd.core.backends.base import BackendUnavailable
from shepherd.core.records import record

log = logging.getLogger("shepherd.claude")

NO_CREDENTIALS = ("Claude backend needs ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN or a Claude login "
                  "(run `claude login`)")
DEFAULT_ALLOWED_TOOLS = ("Bash", "Read", "Write", "Edit", "Glob", "Grep", "Task")
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
SETTING_SOURCES = ("user", "project", "local")


# --- configuration -------------------------------------------------------------------------


@record(frozen=True)
class ClaudeConfig:
    """``[claude]`` task options (with the task's model and max_turns as fallbacks)."""

    model: str | None = None
    permission_mode: str = "acceptEdits"
    allowed_tools: tuple[str, ...] = DEFAULT_ALLOWED_TOOLS
    disallowed_tools: tuple[str, ...] = ()
    max_turns: int | None = None
    max_budget_usd: float | None = None
    cli_max_retries: int = 0
    max_subagents: int = 4
    setting_sources: tuple[str, ...] | None = ()  # () = isolation; None = the CLI's defaults
    cli_path: str | None = None

    @classmethod
    def from_task(cls, task: Any) -> "ClaudeConfig":
        raw = dict((getattr(task, "options", None) or {}).get("claude") or {})

        def bad(key: str, want: str) -> BackendUnavailable:
            return BackendUnavailable(f"[claude] {key}: expected {want}, got {raw.get(key)!r}")

        def str_list(key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
            if key not in raw:
                return default
            v = raw[key]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise bad(key, "a list of strings")
            return tuple(v)

        def number(key: str, default: Any, kind: type, minimum: float = 0) -> Any:
            if key not in raw:
                return default
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
                    or v < minimum:
                raise bad(key, f"a {'whole ' if kind is int else ''}number >= {minimum:g}")
            return kind(v)

        model = raw.get("model", getattr(task, "model", None))
        if model is not None and not isinstance(model, str):
            raise bad("model", "a string")
        mode = raw.get("permission_mode", "acceptEdits")
        if mode not in PERMISSION_MODES:
            raise bad("permission_mode", "one of " + ", ".join(PERMISSION_MODES))
        sources = str_list("setting_sources", ())
        if sources and any(s not in SETTING_SOURCES for s in sources):
            raise bad("setting_sources", "a list of " + ", ".join(SETTING_SOURCES))
        cli_path = raw.get("cli_path")
        if cli_path is not None and not isinstance(cli_path, str):
            raise bad("cli_path", "a string")
        return cls(
            model=model,
            permission_mode=mode,
            allowed_tools=str_list("allowed_tools", DEFAULT_ALLOWED_TOOLS) or (),
            disallowed_tools=str_list("disallowed_tools", ()) or (),
            max_turns=number("max_turns", getattr(task, "max_turns", None), int, 1),
            max_budget_usd=number("max_budget_usd", None, float, 0),
            cli_max_retries=number("cli_max_retries", 0, int, 0),
            max_subagents=number("max_subagents", 4, int, 0),
            setting_sources=sources,
            cli_path=cli_path,
        )


def credential_source(env: Mapping[str, str]) -> str | None:
    """Where the CLI would get its credentials from (a short description), or None."""
    if env.get("ANTHROPIC_API_KEY"):
        return "ANTHROPIC_API_KEY"
    if env.get("ANTHROPIC_AUTH_TOKEN"):
        return "ANTHROPIC_AUTH_TOKEN"
    if env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return "CLAUDE_CODE_OAUTH_TOKEN"
    if env.get("ANTHROPIC_BASE_URL"):
        return "ANTHROPIC_BASE_URL (gateway)"
    for var in ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"):
        if env.get(var) not in (None, "", "0", "false"):
            return var
    config_dir = Path(env.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude").expanduser()
    if (config_dir / ".credentials.json").is_file():
        return f"Claude login ({config_dir})"
    with contextlib.suppress(OSError, ValueError):
        settings = json.loads((config_dir / "settings.json").read_text(encoding="utf-8-sig"))
        if isinstance(settings, dict) and settings.get("apiKeyHelper"):
            return "apiKeyHelper"
    if platform.system() == "Darwin":  # a login kept in the macOS keychain leaves only this behind
        state = Path(env["CLAUDE_CONFIG_DIR"]) / ".claude.json" if env.get("CLAUDE_CONFIG_DIR") \
            else Path.home() / ".claude.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(state.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("oauthAccount"):
                return "Claude login (keychain)"
    return None


def _is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SCRUB_VAR = "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"


def _cli_needs(name: str, env: Mapping[str, str]) -> bool:
    """Credentials the CLI itself reads (its own API calls): kept in its environment,
    and kept from its Bash tool by Claude Code's own scrub (SCRUB_VAR)."""
    upper = name.upper()
    on = lambda var: env.get(var) not in (None, "", "0", "false")  # noqa: E731
    return (upper.startswith(("ANTHROPIC_", "CLAUDE_")) or upper.endswith("_PROXY")
            or (upper.startswith("AWS_") and on("CLAUDE_CODE_USE_BEDROCK"))
            or (upper.startswith(("GOOGLE_", "GCLOUD_", "CLOUDSDK_", "VERTEX_")) and on("CLAUDE_CODE_USE_VERTEX"))
            or (upper.startswith("AZURE_") and on("CLAUDE_CODE_USE_FOUNDRY")))


def subprocess_scrub_available() -> bool:
    """Whether Claude Code can scrub credentials from its subprocesses here. With SCRUB_VAR
    set, the bundled CLI (2.1.x) runs Bash in its own sandbox, which on Linux needs
    bubblewrap and socat (without them every Bash call fails); elsewhere it is not
    verified, so it is not turned on."""
    import shutil
    import sys

    from shepherd.core.tools.spawn import SpawnPolicy, sandbox_problem

    if not sys.platform.startswith("linux") or shutil.which("socat") is None:
        return False
    return sandbox_problem(SpawnPolicy(sandbox="bwrap")) is None


def cli_env(env: Mapping[str, str], config: ClaudeConfig, pass_env: tuple[str, ...] = ()) -> dict[str, str]:
    """Our additions to the CLI's environment (the SDK merges them over os.environ, so a
    variable can only be blanked, not removed): secrets the CLI does not need are blanked
    (the task's ``pass_env`` excepted), and Claude Code is asked to keep its own
    credentials from its Bash tool (SCRUB_VAR) where it can."""
    from shepherd.core.secrets import RUNNER_MARKER, runner_marker_value, withheld_names

    out = {name: "" for name in withheld_names(env, pass_env) if not _cli_needs(name, env)}
    out.update({
        # the CLI and its Bash tool are this runner's tool processes: recovery finds them by it
        RUNNER_MARKER: runner_marker_value(),
        # no feature-flag/telemetry calls: they cost seconds on a network that drops packets
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # the supervisor owns retries
        "CLAUDE_CODE_MAX_RETRIES": str(config.cli_max_retries),
    })
    if SCRUB_VAR not in env:  # an explicit choice (e.g. =0) is the user's
        if subprocess_scrub_available():
            out[SCRUB_VAR] = "1"
        else:
            log.warning("Claude Code's Bash tool will see the CLI's credentials: it can only scrub them "
                        "with bubblewrap and socat installed (Linux)")
    base_url = env.get("ANTHROPIC_BASE_URL", "")
    if base_url and _is_loopback_url(base_url):  # an inherited HTTP(S)_PROXY must not get it
        for var in ("NO_PROXY", "no_proxy"):
            have = [x for x in env.get(var, "").split(",") if x.strip()]
            for host in ("127.0.0.1", "localhost", "::1"):
                if host not in have:
                    have.append(host)
            out[var] = ",".join(have)
    return out
