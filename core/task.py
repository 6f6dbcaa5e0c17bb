"""Task and Subtask specs, loaded and validated from TOML task files or a bare prompt.

Everything is checked before anything runs; a bad file raises ``TaskError`` whose
message names the file, the place (e.g. ``subtasks[2].steps[0].fail``) and the reason.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("claude", "openai", "scripted")
# Every error kind a scripted step may raise (the DESIGN table, minus "cancelled").
FAIL_KINDS = (
    "tool_concurrency", "rate_limit", "auth", "context_overflow", "content_policy",
    "images_rejected", "transient", "stream_broken", "invalid_request", "max_turns", "unknown",
)
RETRY_KEYS = ("max_retries", "initial_delay", "max_delay", "multiplier", "jitter")
PLAN_ID = "plan"  # the planning attempt's subtask id (core.engine); reserved when plan = true


class TaskError(ValueError):
    """A task file or prompt that cannot run. ``str()`` is one line for the user."""


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One scripted model call (scripted backend only)."""

    text: str = ""
    thinking: str = ""
    tools: tuple[ToolCallSpec, ...] = ()
    delay_ms: int = 0
    fail: str | None = None
    after_deltas: int = 0
    retry_after: float | None = None
    message: str | None = None  # error text override for ``fail``


@dataclass(frozen=True)
class Subtask:
    id: str
    title: str
    prompt: str
    check: str | None = None
    check_timeout: float = 300.0
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Task:
    title: str
    backend: str
    subtasks: tuple[Subtask, ...]
    model: str | None = None
    workspace: Path = Path(".")
    plan: bool = False
    plan_prompt: str = ""
    plan_steps: tuple[Step, ...] = ()
    retry: dict[str, dict[str, float]] = field(default_factory=dict)
    max_attempts: int = 12  # total attempt budget per subtask
    max_check_retries: int = 2
    heartbeat_s: float = 15.0
    stall_s: float = 600.0
    max_turns: int = 50
    source: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # backend options ([claude], [openai])
    pass_env: tuple[str, ...] = ()  # secret variables tool processes may still get
    sandbox: str | None = None  # None (the shell is not confined) | "bwrap"
    sandbox_network: bool = False  # bwrap: keep the network

    def to_dict(self) -> dict[str, Any]:
        """The whole task as JSON-able data (stored with session.started, so a session
        can be resumed later). Task files hold no secrets: auth comes from the env."""
        def step(s: Step) -> dict[str, Any]:
            d: dict[str, Any] = {"text": s.text, "thinking": s.thinking, "delay_ms": s.delay_ms,
                                 "after_deltas": s.after_deltas,
                                 "tools": [{"name": t.name, "args": t.args} for t in s.tools]}
            for key in ("fail", "retry_after", "message"):
                if getattr(s, key) is not None:
                    d[key] = getattr(s, key)
            return d

        return {
            "title": self.title,
            "backend": self.backend,
            "model": self.model,
            "workspace": str(self.workspace),
            "plan": self.plan,
            "plan_prompt": self.plan_prompt,
            "plan_steps": [step(s) for s in self.plan_steps],
            "subtasks": [
                {"id": s.id, "title": s.title, "prompt": s.prompt, "check": s.check,
                 "check_timeout": s.check_timeout, "steps": [step(x) for x in s.steps]}
                for s in self.subtasks
            ],
            "retry": self.retry,
            "max_attempts": self.max_attempts,
            "max_check_retries": self.max_check_retries,
            "heartbeat_s": self.heartbeat_s,
            "stall_s": self.stall_s,
            "max_turns": self.max_turns,
            "pass_env": list(self.pass_env), "sandbox": self.sandbox, "sandbox_network": self.sandbox_network,
            **{k: v for k, v in self.options.items()},
            "source": str(self.source) if self.source else None,
        }


def _where(src: str, place: str) -> str:
    return f"{src}: {place}" if place else src


def _expect(value: Any, kind: type | tuple[type, ...], src: str, place: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise TaskError(f"{_where(src, place)}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TaskError(f"{_where(src, place)}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _parse_steps(raw: Any, src: str, place: str) -> tuple[Step, ...]:
    steps = []
    for i, s in enumerate(_expect(raw, list, src, place)):
        p = f"{place}[{i}]"
        _expect(s, dict, src, p)
        unknown = set(s) - {"text", "thinking", "tools", "delay_ms", "fail", "after_deltas", "retry_after", "message"}
        if unknown:
            raise TaskError(f"{_where(src, p)}: unknown key {sorted(unknown)[0]!r}")
        tools = []
        for j, t in enumerate(_expect(s.get("tools", []), list, src, f"{p}.tools")):
            tp = f"{p}.tools[{j}]"
            _expect(t, dict, src, tp)
            name = _expect(t.get("name"), str, src, f"{tp}.name")
            args = _expect(t.get("args", {}), dict, src, f"{tp}.args")
            tools.append(ToolCallSpec(name=name, args=args))
        fail = s.get("fail")
        if fail is not None:
            _expect(fail, str, src, f"{p}.fail")
            if fail not in FAIL_KINDS:
                raise TaskError(
                    f"{_where(src, p + '.fail')}: unknown fail kind {fail!r} (one of {', '.join(FAIL_KINDS)})"
                )
        retry_after = s.get("retry_after")
        if retry_after is not None:
            _expect(retry_after, (int, float), src, f"{p}.retry_after")
            if retry_after < 0:
                raise TaskError(f"{_where(src, p + '.retry_after')}: must be >= 0")
        message = s.get("message")
        if message is not None:
            _expect(message, str, src, f"{p}.message")
        delay_ms = _expect(s.get("delay_ms", 0), int, src, f"{p}.delay_ms")
        after = _expect(s.get("after_deltas", 0), int, src, f"{p}.after_deltas")
        if delay_ms < 0 or after < 0:
            raise TaskError(f"{_where(src, p)}: delay_ms and after_deltas must be >= 0")
        steps.append(
            Step(
                text=_expect(s.get("text", ""), str, src, f"{p}.text"),
                thinking=_expect(s.get("thinking", ""), str, src, f"{p}.thinking"),
                tools=tuple(tools),
                delay_ms=delay_ms,
                fail=fail,
                after_deltas=after,
                retry_after=float(retry_after) if retry_after is not None else None,
                message=message,
            )
        )
    return tuple(steps)


def _parse_retry(raw: Any, src: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind, settings in _expect(raw, dict, src, "retry").items():
        if kind not in FAIL_KINDS:
            raise TaskError(f"{_where(src, f'retry.{kind}')}: unknown error kind {kind!r}")
        _expect(settings, dict, src, f"retry.{kind}")
        clean: dict[str, float] = {}
        for key, value in settings.items():
            if key not in RETRY_KEYS:
                raise TaskError(f"{_where(src, f'retry.{kind}.{key}')}: unknown setting (one of {', '.join(RETRY_KEYS)})")
            _expect(value, (int, float), src, f"retry.{kind}.{key}")
            if value < 0:
                raise TaskError(f"{_where(src, f'retry.{kind}.{key}')}: must be >= 0")
            if key == "max_retries" and value != int(value):
                raise TaskError(f"{_where(src, f'retry.{kind}.{key}')}: must be a whole number")
            if key == "jitter" and value > 1:
                raise TaskError(f"{_where(src, f'retry.{kind}.{key}')}: must be between 0 and 1 (a fraction)")
            clean[key] = value
        out[kind] = clean
    return out


TOP_KEYS = {
    "title", "backend", "model", "workspace", "plan", "plan_prompt", "plan_steps", "subtasks",
    "retry", "max_attempts", "max_check_retries", "heartbeat_s", "stall_s", "max_turns",
    "claude", "openai",
    "pass_env", "sandbox", "sandbox_network",  # how tool processes run: core.tools.spawn
}


def _number(data: dict[str, Any], key: str, default: float, src: str, *, minimum: float,
            strict: bool = False, integer: bool = False) -> Any:
    """A top-level number with a lower bound (``strict``: must be above it)."""
    value = _expect(data.get(key, default), int if integer else (int, float), src, key)
    if value < minimum or (strict and value == minimum):
        raise TaskError(f"{_where(src, key)}: must be {'>' if strict else '>='} {minimum:g}")
    return value if integer else float(value)


def task_from_dict(data: dict[str, Any], *, src: str = "<task>", base_dir: Path | None = None,
                   backend: str | None = None, model: str | None = None) -> Task:
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise TaskError(f"{src}: unknown key {sorted(unknown)[0]!r}")
    title = _expect(data.get("title", ""), str, src, "title")
    backend = backend or _expect(data.get("backend", "scripted"), str, src, "backend")
    if backend not in BACKENDS:
        raise TaskError(f"{_where(src, 'backend')}: unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    model = model or data.get("model")
    if model is not None:
        _expect(model, str, src, "model")
    ws = Path(_expect(data.get("workspace", "."), str, src, "workspace")).expanduser()
    if not ws.is_absolute():
        ws = (base_dir or Path.cwd()) / ws
    plan = _expect(data.get("plan", False), bool, src, "plan")
    raw_subtasks = _expect(data.get("subtasks", []), list, src, "subtasks")
    if not raw_subtasks and not plan:
        raise TaskError(f"{_where(src, 'subtasks')}: a task needs at least one subtask (or plan = true)")
    subtasks: list[Subtask] = []
    seen: set[str] = set()
    for i, s in enumerate(raw_subtasks):
        p = f"subtasks[{i}]"
        _expect(s, dict, src, p)
        unknown = set(s) - {"id", "title", "prompt", "check", "check_timeout", "steps"}
        if unknown:
            raise TaskError(f"{_where(src, p)}: unknown key {sorted(unknown)[0]!r}")
        sid = _expect(s.get("id", f"s{i + 1}"), str, src, f"{p}.id").strip()
        if not sid:
            raise TaskError(f"{_where(src, p + '.id')}: must not be empty")
        if sid in seen:
            raise TaskError(f"{_where(src, p + '.id')}: duplicate subtask id {sid!r}")
        if plan and sid == PLAN_ID:
            raise TaskError(f"{_where(src, p + '.id')}: {PLAN_ID!r} is reserved for the planning attempt")
        seen.add(sid)
        prompt = s.get("prompt")
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            raise TaskError(f"{_where(src, p + '.prompt')}: missing prompt")
        _expect(prompt, str, src, f"{p}.prompt")
        check = s.get("check")
        if check is not None:
            _expect(check, str, src, f"{p}.check")
        check_timeout = _expect(s.get("check_timeout", 300), (int, float), src, f"{p}.check_timeout")
        if check_timeout <= 0:
            raise TaskError(f"{_where(src, p + '.check_timeout')}: must be > 0")
        subtasks.append(
            Subtask(
                id=sid,
                title=_expect(s.get("title", sid), str, src, f"{p}.title"),
                prompt=prompt,
                check=check,
                check_timeout=float(check_timeout),
                steps=_parse_steps(s.get("steps", []), src, f"{p}.steps"),
            )
        )
    options = {k: _expect(data[k], dict, src, k) for k in ("claude", "openai") if k in data}
    max_attempts = _number(data, "max_attempts", 12, src, minimum=1, integer=True)
    plan_prompt = _expect(data.get("plan_prompt", ""), str, src, "plan_prompt")
    if plan and not raw_subtasks and not (plan_prompt.strip() or title.strip()):
        raise TaskError(f"{_where(src, 'plan_prompt')}: a planned task needs plan_prompt (what to plan)")
    return Task(
        title=title or (subtasks[0].title if subtasks else "Planned task"),
        backend=backend,
        model=model,
        workspace=ws,
        plan=plan,
        plan_prompt=plan_prompt,
        plan_steps=_parse_steps(data.get("plan_steps", []), src, "plan_steps"),
        subtasks=tuple(subtasks),
        retry=_parse_retry(data.get("retry", {}), src),
        max_attempts=max_attempts,
        max_check_retries=_number(data, "max_check_retries", 2, src, minimum=0, integer=True),
        heartbeat_s=_number(data, "heartbeat_s", 15.0, src, minimum=0, strict=True),
        stall_s=_number(data, "stall_s", 600.0, src, minimum=0, strict=True),
        max_turns=_number(data, "max_turns", 50, src, minimum=1, integer=True),
        source=None,
        options=options,
        **_spawn_keys(data, src),
    )


def task_from_stored(data: dict[str, Any]) -> Task:
    """Rebuild a task from ``Task.to_dict()`` (a stored session), for resuming it."""
    data = {k: v for k, v in data.items() if v is not None}
    if "subtasks" in data:
        data["subtasks"] = [{k: v for k, v in s.items() if v is not None} for s in data["subtasks"]]
    source = data.pop("source", None)
    task = task_from_dict(data, src="stored task")
    return Task(**{**task.__dict__, "source": Path(source) if source else None})


def load_task(path: str | Path, *, backend: str | None = None, model: str | None = None) -> Task:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TaskError(f"{path}: cannot read task file ({e.strerror or e})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TaskError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{path}: invalid TOML: {e}") from None
    task = task_from_dict(data, src=str(path), base_dir=path.resolve().parent, backend=backend, model=model)
    return Task(**{**task.__dict__, "source": path.resolve()})


def prompt_task(prompt: str, *, backend: str = "scripted", model: str | None = None,
                workspace: str | Path = ".", title: str | None = None) -> Task:
    """A bare prompt is a task with one subtask."""
    if not prompt or not prompt.strip():
        raise TaskError("prompt: must not be empty")
    first_line = prompt.strip().splitlines()[0]
    return task_from_dict(
        {
            "title": title or (first_line[:60] + ("…" if len(first_line) > 60 else "")),
            "backend": backend,
            "workspace": str(workspace),
            "subtasks": [{"id": "main", "title": first_line[:60], "prompt": prompt}],
        },
        src="prompt",
        backend=backend,
        model=model,
    )


def _spawn_keys(data: dict[str, Any], src: str) -> dict[str, Any]:
    """``pass_env`` (names), ``sandbox`` ("bwrap" or absent), ``sandbox_network`` (bool)."""
    names = _expect(data.get("pass_env", []), list, src, "pass_env")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip() or "=" in n:
            raise TaskError(f"{_where(src, f'pass_env[{i}]')}: expected a variable name, got {n!r}")
    sandbox = data.get("sandbox")
    if sandbox is not None and sandbox != "bwrap":
        raise TaskError(f"{_where(src, 'sandbox')}: the only sandbox is \"bwrap\", got {sandbox!r}")
    network = _expect(data.get("sandbox_network", False), bool, src, "sandbox_network")
    return {"pass_env": tuple(n.strip() for n in names), "sandbox": sandbox, "sandbox_network": network}
