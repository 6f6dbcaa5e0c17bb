"""Task and Subtask specs, loaded and validated from TOML task files or a bare prompt.

Everything is checked before anything runs; a bad file raises ``TaskError`` whose
message names the file, the place (e.g. ``subtasks[2].steps[0].fail``) and the reason.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from shepherd.core.records import record

if TYPE_CHECKING:
    from shepherd.core.approvals import ApprovalPolicy

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


@record(frozen=True)
class ToolCallSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@record(frozen=True)
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


@record(frozen=True)
class Subtask:
    id: str
    title: str
    prompt: str
    check: str | None = None
    check_timeout: float = 300.0
    steps: tuple[Step, ...] = ()


@record(frozen=True)
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
    approve_tools: tuple[str, ...] = ()  # tool names that wait for a person's yes ("*": all)
    auto_approve: tuple[dict[str, str], ...] = ()  # rules: {"tool": ..., "prefix": ...}
    isolation: str = "none"  # "none" | "worktree": the session runs in its own git worktree

    def approval_policy(self) -> "ApprovalPolicy":
        """The task's approvals (core.approvals); ``.active`` is False when nothing is gated."""
        from shepherd.core.approvals import policy_from_task

        return policy_from_task(self.approve_tools, self.auto_approve)

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
            "approve_tools": list(self.approve_tools), "auto_approve": [dict(r) for r in self.auto_approve],
            "isolation": self.isolation,
            **{k: v for k, v in self.options.items()},
            "source": str(self.source) if self.source else None,
        }


def _where(src: str, place: str) -> str:
    return f"{src}: {place}" if place else src


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)


def _expect(value: Any, kind: type | tuple[type, ...], src: str, place: str) -> Any:
    """``value`` if it is a ``kind``, else TaskError (bool is never a number)."""
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise TaskError(f"{_where(src, place)}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        raise TaskError(f"{_where(src, place)}: expected {_kind_name(kind)}, got {type(value).__name__} {value!r}")
    return value


MAX_PROBLEMS_SHOWN = 12
MAX_DEPTH = 32  # tables/arrays inside each other; a task file needs a handful
MAX_TASK_BYTES = 4 * 1024 * 1024


@record(frozen=True)
class Num:
    """A numeric setting: type, bounds (``above``: strictly greater than ``low``), default."""

    default: float | int | None
    integer: bool = False
    low: float = 0
    above: bool = False
    high: float = 1e9
    whole: bool = False  # a float is accepted when it is a whole number (retry max_retries)


class _Check:
    """Collects every problem of a task (place, reason) instead of stopping at the first,
    so one run of ``shepherd run`` shows all that is wrong. Methods return a usable
    fallback after recording a problem, so checking goes on."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.problems: list[str] = []

    def fail(self, place: str, reason: str) -> None:
        self.problems.append(f"{place}: {reason}" if place else reason)

    def type(self, value: Any, kind: type | tuple[type, ...], place: str, fallback: Any = None) -> Any:
        try:
            return _expect(value, kind, "", place)
        except TaskError as e:
            self.fail("", str(e).removeprefix(": "))
            return fallback

    def keys(self, d: dict[str, Any], allowed: Iterable[str], place: str) -> None:
        for key in sorted(set(d) - set(allowed), key=str):
            self.fail(place, f"unknown key {key!r}")

    def num(self, value: Any, spec: Num, place: str) -> Any:
        if value is None:
            return spec.default
        kind: type | tuple[type, ...] = int if spec.integer and not spec.whole else (int, float)
        value = self.type(value, kind, place, fallback=None)
        if value is None:
            return spec.default
        bad = None
        if isinstance(value, float) and not math.isfinite(value):
            bad = f"must be a finite number, got {value!r}"
        elif value < spec.low or (spec.above and value == spec.low):
            bad = f"must be {'>' if spec.above else '>='} {spec.low:g}"
        elif value > spec.high:
            bad = f"must be between {spec.low:g} and {spec.high:g}"
        elif spec.whole and value != int(value):
            bad = "must be a whole number"
        if bad:
            self.fail(place, bad)
            return spec.default
        return int(value) if spec.integer else float(value)

    def done(self) -> None:
        if not self.problems:
            return
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        more = len(self.problems) - len(shown)
        text = "; ".join(shown) + (f"; … and {more} more" if more else "")
        head = f"{len(self.problems)} problems: " if len(self.problems) > 1 else ""
        raise TaskError(f"{self.src}: {head}{text}")


STEP_NUMBERS = {
    "delay_ms": Num(0, integer=True, high=3_600_000),
    "after_deltas": Num(0, integer=True, high=1_000_000),
    "retry_after": Num(None, high=86_400),
}
STEP_KEYS = {"text", "thinking", "tools", "fail", "message", *STEP_NUMBERS}


def _parse_steps(ck: _Check, raw: Any, place: str) -> tuple[Step, ...]:
    steps = []
    for i, s in enumerate(ck.type(raw, list, place, fallback=[])):
        p = f"{place}[{i}]"
        if ck.type(s, dict, p) is None:
            continue
        ck.keys(s, STEP_KEYS, p)
        tools = []
        for j, t in enumerate(ck.type(s.get("tools", []), list, f"{p}.tools", fallback=[])):
            tp = f"{p}.tools[{j}]"
            if ck.type(t, dict, tp) is None:
                continue
            name = ck.type(t.get("name"), str, f"{tp}.name", fallback="")
            args = ck.type(t.get("args", {}), dict, f"{tp}.args", fallback={})
            tools.append(ToolCallSpec(name=name, args=args))
        fail = s.get("fail")
        if fail is not None and ck.type(fail, str, f"{p}.fail") is not None and fail not in FAIL_KINDS:
            ck.fail(f"{p}.fail", f"unknown fail kind {fail!r} (one of {', '.join(FAIL_KINDS)})")
        message = s.get("message")
        if message is not None:
            ck.type(message, str, f"{p}.message")
        nums = {k: ck.num(s.get(k), spec, f"{p}.{k}") for k, spec in STEP_NUMBERS.items()}
        steps.append(Step(
            text=ck.type(s.get("text", ""), str, f"{p}.text", fallback=""),
            thinking=ck.type(s.get("thinking", ""), str, f"{p}.thinking", fallback=""),
            tools=tuple(tools), fail=fail, message=message, **nums))
    return tuple(steps)


RETRY_NUMBERS = {
    "max_retries": Num(None, integer=True, whole=True, high=100),
    "initial_delay": Num(None, high=86_400),
    "max_delay": Num(None, high=86_400),
    "multiplier": Num(None, low=1, high=100),
    "jitter": Num(None, high=1),
}
assert set(RETRY_NUMBERS) == set(RETRY_KEYS)


def _parse_retry(ck: _Check, raw: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind, settings in ck.type(raw, dict, "retry", fallback={}).items():
        if kind not in FAIL_KINDS:
            ck.fail(f"retry.{kind}", f"unknown error kind {kind!r}")
            continue
        if ck.type(settings, dict, f"retry.{kind}") is None:
            continue
        clean: dict[str, float] = {}
        for key, value in settings.items():
            place = f"retry.{kind}.{key}"
            if key not in RETRY_NUMBERS:
                ck.fail(place, f"unknown setting (one of {', '.join(RETRY_KEYS)})")
                continue
            n = len(ck.problems)
            number = ck.num(value, RETRY_NUMBERS[key], place)
            if len(ck.problems) == n:
                clean[key] = value if key != "max_retries" else number
        out[kind] = clean
    return out


# Top-level numeric settings: name -> bounds (a new one is one line here plus its Task field).
TOP_NUMBERS = {
    "max_attempts": Num(12, integer=True, low=1, high=1000),
    "max_check_retries": Num(2, integer=True, high=100),
    "heartbeat_s": Num(15.0, above=True, high=86_400),
    "stall_s": Num(600.0, above=True, high=30 * 86_400),
    "max_turns": Num(50, integer=True, low=1, high=100_000),
}
SUBTASK_KEYS = {"id", "title", "prompt", "check", "check_timeout", "steps"}
CHECK_TIMEOUT = Num(300.0, above=True, high=30 * 86_400)
TOP_KEYS = {
    "title", "backend", "model", "workspace", "plan", "plan_prompt", "plan_steps", "subtasks",
    "retry", "claude", "openai", *TOP_NUMBERS,
    "pass_env", "sandbox", "sandbox_network",  # how tool processes run: core.tools.spawn
    "approve_tools", "auto_approve",  # tool approvals: core.approvals
    "isolation",  # "worktree": core.worktree
}
ISOLATIONS = ("none", "worktree")


def _too_deep(data: Any) -> str | None:
    """The place of the first value nested deeper than MAX_DEPTH (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, place, depth = stack.pop()
        if depth > MAX_DEPTH:
            return place or "(top)"
        if isinstance(value, dict):
            stack.extend((v, f"{place}.{k}" if place else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{place}[{i}]", depth + 1) for i, v in enumerate(value))
    return None


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def task_from_dict(data: dict[str, Any], *, src: str = "<task>", base_dir: Path | None = None,
                   backend: str | None = None, model: str | None = None,
                   check_workspace: bool = True) -> Task:
    """Validate ``data`` completely; TaskError lists every problem found (one line).
    ``check_workspace``: the workspace must be an existing directory (off for a stored
    task, whose workspace the resuming command checks itself)."""
    ck = _Check(src)
    deep = _too_deep(data)
    if deep is not None:
        raise TaskError(f"{_where(src, deep[:80])}: nested deeper than {MAX_DEPTH} levels")
    ck.keys(data, TOP_KEYS, "")
    title = ck.type(data.get("title", ""), str, "title", fallback="")
    backend = backend or ck.type(data.get("backend", "scripted"), str, "backend", fallback="scripted")
    if backend not in BACKENDS:
        ck.fail("backend", f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    model = model or data.get("model")
    if model is not None:
        model = ck.type(model, str, "model")
    ws = Path(ck.type(data.get("workspace", "."), str, "workspace", fallback=".")).expanduser()
    if not ws.is_absolute():
        ws = (base_dir or Path.cwd()) / ws
    if check_workspace and not ws.is_dir():
        ck.fail("workspace", f"{str(ws)!r} is not a directory" if ws.exists() else f"{str(ws)!r} does not exist")
    plan = ck.type(data.get("plan", False), bool, "plan", fallback=False)
    raw_subtasks = ck.type(data.get("subtasks", []), list, "subtasks", fallback=None)
    if raw_subtasks == [] and not plan:
        ck.fail("subtasks", "a task needs at least one subtask (or plan = true)")
    subtasks: list[Subtask] = []
    seen: set[str] = set()
    for i, s in enumerate(raw_subtasks or []):
        p = f"subtasks[{i}]"
        if ck.type(s, dict, p) is None:
            continue
        ck.keys(s, SUBTASK_KEYS, p)
        sid = (ck.type(s.get("id", f"s{i + 1}"), str, f"{p}.id", fallback=f"s{i + 1}")).strip()
        if not sid:
            ck.fail(f"{p}.id", "must not be empty")
        elif _has_control(sid):
            ck.fail(f"{p}.id", f"must not contain control characters ({sid!r})")
        elif sid in seen:
            ck.fail(f"{p}.id", f"duplicate subtask id {sid!r}")
        elif plan and sid == PLAN_ID:
            ck.fail(f"{p}.id", f"{PLAN_ID!r} is reserved for the planning attempt")
        seen.add(sid)
        prompt = s.get("prompt")
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            ck.fail(f"{p}.prompt", "missing prompt")
        else:
            prompt = ck.type(prompt, str, f"{p}.prompt", fallback="")
        check = s.get("check")
        if check is not None:
            check = ck.type(check, str, f"{p}.check")
        subtasks.append(Subtask(
            id=sid, title=ck.type(s.get("title", sid), str, f"{p}.title", fallback=sid),
            prompt=prompt or "", check=check,
            check_timeout=ck.num(s.get("check_timeout"), CHECK_TIMEOUT, f"{p}.check_timeout"),
            steps=_parse_steps(ck, s.get("steps", []), f"{p}.steps")))
    options = {k: ck.type(data[k], dict, k, fallback={}) for k in ("claude", "openai") if k in data}
    plan_prompt = ck.type(data.get("plan_prompt", ""), str, "plan_prompt", fallback="")
    if plan and not raw_subtasks and not (plan_prompt.strip() or title.strip()):
        ck.fail("plan_prompt", "a planned task needs plan_prompt (what to plan)")
    plan_steps = _parse_steps(ck, data.get("plan_steps", []), "plan_steps")
    retry = _parse_retry(ck, data.get("retry", {}))
    numbers = {k: ck.num(data.get(k), spec, k) for k, spec in TOP_NUMBERS.items()}
    spawn = _spawn_keys(ck, data)
    approvals = _approval_keys(ck, data)
    isolation = ck.type(data.get("isolation", "none"), str, "isolation", fallback="none")
    if isolation not in ISOLATIONS:
        ck.fail("isolation", f'must be "none" or "worktree", got {isolation!r}')
        isolation = "none"
    elif isolation == "worktree" and check_workspace and ws.is_dir():
        from shepherd.core.worktree import isolation_refusal

        refused = isolation_refusal(ws)
        if refused:
            ck.fail("isolation", f'"worktree": {refused}')
    ck.done()
    return Task(
        title=title or (subtasks[0].title if subtasks else "Planned task"),
        backend=backend,
        model=model,
        workspace=ws,
        plan=plan,
        plan_prompt=plan_prompt,
        plan_steps=plan_steps,
        subtasks=tuple(subtasks),
        retry=retry,
        source=None,
        options=options,
        **spawn,
        **approvals,
        **numbers,
        isolation=isolation,
    )


def task_from_stored(data: dict[str, Any]) -> Task:
    """Rebuild a task from ``Task.to_dict()`` (a stored session), for resuming it."""
    data = {k: v for k, v in data.items() if v is not None}
    if "subtasks" in data:
        data["subtasks"] = [{k: v for k, v in s.items() if v is not None} for s in data["subtasks"]]
    source = data.pop("source", None)
    task = task_from_dict(data, src="stored task", check_workspace=False)
    return Task(**{**task.__dict__, "source": Path(source) if source else None})


def load_task(path: str | Path, *, backend: str | None = None, model: str | None = None) -> Task:
    path = Path(path)
    raw = _read_task_bytes(path)
    if len(raw) > MAX_TASK_BYTES:
        raise TaskError(f"{path}: too large for a task file (over {MAX_TASK_BYTES // (1024 * 1024)} MiB)")
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors): not TOML, not content
        raw = raw[3:]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{path}: invalid TOML: {_printable(str(e))}") from None
    except RecursionError:  # tomllib recurses per nesting level
        raise TaskError(f"{path}: nested too deeply to read (limit {MAX_DEPTH} levels)") from None
    task = task_from_dict(data, src=str(path), base_dir=path.resolve().parent, backend=backend, model=model)
    return Task(**{**task.__dict__, "source": path.resolve()})


FIFO_WAIT_S = 5.0  # a pipe (`shepherd run <(make-task)`) gets this long to deliver the file


def _read_task_bytes(path: Path) -> bytes:
    """At most MAX_TASK_BYTES + 1 bytes of a regular file or a pipe, never a hang: opened
    non-blocking (a FIFO with no writer would block the open), a pipe read with a deadline,
    devices and sockets refused."""
    import os
    import select
    import stat as st
    import time

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise TaskError(f"{path}: cannot read task file ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if st.S_ISDIR(mode):
            raise TaskError(f"{path}: cannot read task file (Is a directory)")
        if st.S_ISREG(mode):
            os.set_blocking(fd, True)
            with os.fdopen(os.dup(fd), "rb") as f:
                return f.read(MAX_TASK_BYTES + 1)
        if not st.S_ISFIFO(mode):
            raise TaskError(f"{path}: cannot read task file (not a regular file or a pipe)")
        chunks: list[bytes] = []
        size, deadline = 0, time.monotonic() + FIFO_WAIT_S
        while size <= MAX_TASK_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TaskError(f"{path}: cannot read task file (a pipe that sent no end of file "
                                f"within {FIFO_WAIT_S:g} s)")
            chunk = os.read(fd, 65536)
            if not chunk:  # end of file (also: a FIFO nobody writes to)
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise TaskError(f"{path}: cannot read task file ({e.strerror or e})") from None
    finally:
        os.close(fd)


def _printable(text: str) -> str:
    """``text`` with every control character shown escaped (it may quote the file)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def prompt_task(prompt: str, *, backend: str = "scripted", model: str | None = None,
                workspace: str | Path = ".", title: str | None = None, isolation: str = "none") -> Task:
    """A bare prompt is a task with one subtask."""
    if not prompt or not prompt.strip():
        raise TaskError("prompt: must not be empty")
    first_line = prompt.strip().splitlines()[0]
    return task_from_dict(
        {
            "title": title or (first_line[:60] + ("…" if len(first_line) > 60 else "")),
            "backend": backend,
            "workspace": str(workspace),
            "isolation": isolation,
            "subtasks": [{"id": "main", "title": first_line[:60], "prompt": prompt}],
        },
        src="prompt",
        backend=backend,
        model=model,
    )


def _spawn_keys(ck: _Check, data: dict[str, Any]) -> dict[str, Any]:
    """``pass_env`` (names), ``sandbox`` ("bwrap" or absent), ``sandbox_network`` (bool)."""
    names = ck.type(data.get("pass_env", []), list, "pass_env", fallback=[])
    good: list[str] = []
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip() or "=" in n or _has_control(n):
            ck.fail(f"pass_env[{i}]", f"expected a variable name, got {n!r}")
        else:
            good.append(n.strip())
    sandbox = data.get("sandbox")
    if sandbox is not None and sandbox != "bwrap":
        ck.fail("sandbox", f'the only sandbox is "bwrap", got {sandbox!r}')
        sandbox = None
    network = ck.type(data.get("sandbox_network", False), bool, "sandbox_network", fallback=False)
    return {"pass_env": tuple(good), "sandbox": sandbox, "sandbox_network": network}


RULE_KEYS = ("tool", "prefix")


def _tool_name(ck: _Check, value: Any, place: str) -> str | None:
    if not isinstance(value, str) or not value.strip() or _has_control(value) or value != value.strip():
        ck.fail(place, f"expected a tool name, got {value!r}")
        return None
    return value


def _approval_keys(ck: _Check, data: dict[str, Any]) -> dict[str, Any]:
    """``approve_tools`` (tool names, or "*") and ``auto_approve`` (rules ``{tool, prefix}``)."""
    names = ck.type(data.get("approve_tools", []), list, "approve_tools", fallback=[])
    tools: list[str] = []
    for i, n in enumerate(names):
        name = _tool_name(ck, n, f"approve_tools[{i}]")
        if name is not None and name not in tools:
            tools.append(name)
    raw_rules = ck.type(data.get("auto_approve", []), list, "auto_approve", fallback=[])
    rules: list[dict[str, str]] = []
    for i, r in enumerate(raw_rules):
        p = f"auto_approve[{i}]"
        if ck.type(r, dict, p) is None:
            continue
        ck.keys(r, RULE_KEYS, p)
        tool = _tool_name(ck, r.get("tool"), f"{p}.tool")
        prefix = r.get("prefix")
        if not isinstance(prefix, str) or not prefix.strip() or _has_control(prefix):
            ck.fail(f"{p}.prefix", f"expected a non-empty text, got {prefix!r}")
            continue
        if tool is not None:
            rules.append({"tool": tool, "prefix": prefix})
    if rules and not tools:
        ck.fail("auto_approve", "has rules but approve_tools names no tool to gate")
    return {"approve_tools": tuple(tools), "auto_approve": tuple(rules)}
