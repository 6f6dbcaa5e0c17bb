"""The user's own settings: ``$XDG_CONFIG_HOME/shepherd/config.toml`` (default
``~/.config/shepherd/config.toml``). Optional; a missing file means the defaults.

```toml
bell = true                 # the terminal bell when a session starts waiting for you
desktop = "auto"            # auto | osc9 | osc777 | off (auto: osc777 on foot/rxvt, none on the Linux console, else osc9)
notify_command = ["notify-send", "-a", "shepherd"]   # or a string, split like a shell would
notify_pass_env = ["SLACK_WEBHOOK_URL"]   # secret variables notify_command may see (default none)
notify = true               # false: no notification of any kind
```

``notify_command`` runs with three more arguments: the session id, its title and the
reason (e.g. ``waiting for approval: Bash make deploy``), without a shell, in the
environment tools get (``core.secrets.child_env``: no credentials, except the names in
``notify_pass_env``).

A file that is not valid (TOML errors, unknown keys, wrong types) raises ``ConfigError``:
one line naming the file and the key; the CLI prints it and exits 2 before anything runs.
"""

from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from typing import Any, Mapping
from shepherd.core.records import record

DESKTOP_MODES = ("auto", "osc9", "osc777", "off")
_KEYS = ("bell", "desktop", "notify_command", "notify_pass_env", "notify")


class ConfigError(Exception):
    """The user config file cannot be used: one line (the CLI exits 2 with it)."""


@record(frozen=True, slots=True)
class UserConfig:
    bell: bool = True
    desktop: str = "auto"
    notify_command: tuple[str, ...] = ()
    notify: bool = True  # the master switch
    notify_pass_env: tuple[str, ...] = ()  # secret variables notify_command is given
    path: Path | None = field(default=None, compare=False)  # where it was read from (None: defaults)

    @property
    def terminal_on(self) -> bool:
        return self.notify and (self.bell or self.desktop != "off")


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/shepherd/config.toml``; a relative or empty XDG_CONFIG_HOME is
    ignored (as the XDG spec says), so the default is ``~/.config``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "shepherd" / "config.toml"


def _shown(path: Path) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def parse_config(text: str, path: Path) -> UserConfig:
    """The settings in ``text`` (the contents of ``path``); ``ConfigError`` if unusable."""
    import tomllib  # (here: most people have no file, and start-up need not compile its patterns)

    where = _shown(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: invalid TOML: {str(e).splitlines()[0] if str(e) else 'parse error'}") from None
    unknown = sorted(k for k in data if k not in _KEYS)
    if unknown:
        known = ", ".join(_KEYS)
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {known})")
    values: dict[str, Any] = {}
    for key in ("bell", "notify"):
        if key in data:
            if not isinstance(data[key], bool):
                raise ConfigError(f"{where}: {key} must be true or false, got {_type(data[key])}")
            values[key] = data[key]
    if "desktop" in data:
        desktop = data["desktop"]
        if not isinstance(desktop, str) or desktop not in DESKTOP_MODES:
            shown = repr(desktop) if isinstance(desktop, str) else _type(desktop)
            raise ConfigError(f"{where}: desktop must be one of {', '.join(DESKTOP_MODES)}, got {shown[:60]}")
        values["desktop"] = desktop
    if "notify_command" in data:
        values["notify_command"] = _argv(data["notify_command"], where)
    if "notify_pass_env" in data:
        names = data["notify_pass_env"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n and "=" not in n and "\x00" not in n
                                                  for n in names):
            raise ConfigError(f"{where}: notify_pass_env must be a list of variable names")
        values["notify_pass_env"] = tuple(names)
    return UserConfig(**values, path=path)


def _type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _argv(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        import shlex

        try:
            argv = shlex.split(value)
        except ValueError as e:  # an unclosed quote
            raise ConfigError(f"{where}: notify_command: {e}") from None
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise ConfigError(f"{where}: notify_command must be a list of strings or a string, got {_type(value)}")
    if value and not argv or (argv and not argv[0].strip()):
        raise ConfigError(f"{where}: notify_command: the program name is empty")
    for arg in argv:
        if "\x00" in arg:
            raise ConfigError(f"{where}: notify_command: an argument holds a NUL byte")
    return tuple(argv)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> UserConfig:
    """The user config (defaults when the file does not exist)."""
    path = config_path(env) if path is None else path
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return UserConfig()
    except IsADirectoryError:
        raise ConfigError(f"{_shown(path)}: is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{_shown(path)}: cannot read it: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{_shown(path)}: not UTF-8 text") from None
    return parse_config(text, path)


__all__ = ["ConfigError", "DESKTOP_MODES", "UserConfig", "config_path", "load_config", "parse_config"]
