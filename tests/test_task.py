"""Task files and bare prompts: loading, defaults, and validation with clear messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shepherd.core.task import FAIL_KINDS, Task, TaskError, load_task, prompt_task, task_from_dict, task_from_stored

DESIGN_EXAMPLE = '''
title = "Fix the date parser"
backend = "claude"            # claude | openai | scripted
model = "claude-sonnet-4-5"   # optional
workspace = "."               # the agent's working directory
plan = false                  # true: a planning attempt writes the subtasks first

[[subtasks]]
id = "find"
title = "Find the failing test"
prompt = "Run the tests and find which one fails and why."
check = "pytest -q tests/test_dates.py"   # optional: must pass for the subtask to be done

[retry.tool_concurrency]
max_retries = 5
'''

SCRIPTED = '''
title = "Scripted"
workspace = "ws"

[[subtasks]]
id = "one"
prompt = "Look around."

[[subtasks.steps]]
text = "Let me look around."
tools = [{ name = "list_files", args = { path = "." } },
         { name = "read_file", args = { path = "README.md" } }]
delay_ms = 20

[[subtasks.steps]]
fail = "rate_limit"
after_deltas = 2
retry_after = 7
'''


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def base(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"title": "t", "subtasks": [{"id": "a", "prompt": "do a"}]}
    data.update(extra)
    return data


def sub(**extra: Any) -> dict[str, Any]:
    return base(subtasks=[{"id": "a", "prompt": "do a", **extra}])


def step(**extra: Any) -> dict[str, Any]:
    return sub(steps=[extra])


def refused(data: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(TaskError) as exc:
        task_from_dict(data, src="t.toml")
    msg = str(exc.value)
    assert msg.startswith("t.toml"), msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg
    return msg


# --- loading ------------------------------------------------------------------------------

def test_design_example_loads(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, DESIGN_EXAMPLE))
    assert (task.title, task.backend, task.model, task.plan) == (
        "Fix the date parser", "claude", "claude-sonnet-4-5", False)
    assert task.workspace == tmp_path.resolve()
    assert task.source == (tmp_path / "task.toml").resolve()
    (s,) = task.subtasks
    assert (s.id, s.title, s.check) == ("find", "Find the failing test", "pytest -q tests/test_dates.py")
    assert task.retry == {"tool_concurrency": {"max_retries": 5}}
    assert (task.max_attempts, task.max_check_retries) == (12, 2)


def test_scripted_steps_load(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    task = load_task(write(tmp_path, SCRIPTED))
    assert task.backend == "scripted"  # the default
    assert task.workspace == (tmp_path / "ws").resolve()
    first, second = task.subtasks[0].steps
    assert [t.name for t in first.tools] == ["list_files", "read_file"]
    assert first.tools[1].args == {"path": "README.md"}
    assert (first.text, first.delay_ms, first.fail) == ("Let me look around.", 20, None)
    assert (second.fail, second.after_deltas, second.retry_after) == ("rate_limit", 2, 7.0)
    assert task.subtasks[0].title == "one"  # title defaults to the id


def test_cli_overrides_backend_and_model(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, DESIGN_EXAMPLE), backend="openai", model="gpt-x")
    assert (task.backend, task.model) == ("openai", "gpt-x")
    with pytest.raises(TaskError, match="unknown backend 'nope'"):
        load_task(write(tmp_path, DESIGN_EXAMPLE), backend="nope")


def test_workspace_absolute_and_home(tmp_path: Path) -> None:
    assert task_from_dict(base(workspace=str(tmp_path))).workspace == tmp_path
    assert task_from_dict(base(workspace="~")).workspace == Path.home()


def test_default_ids_and_title() -> None:
    task = task_from_dict({"subtasks": [{"prompt": "first"}, {"prompt": "second", "title": "Two"}]})
    assert [s.id for s in task.subtasks] == ["s1", "s2"]
    assert task.title == "s1"


def test_every_fail_kind_is_accepted_in_steps_and_retry() -> None:
    for kind in FAIL_KINDS:
        task = task_from_dict({**step(fail=kind), "retry": {kind: {"max_retries": 1}}})
        assert task.subtasks[0].steps[0].fail == kind
        assert task.retry[kind] == {"max_retries": 1}


def test_backend_options_tables() -> None:
    task = task_from_dict(base(claude={"permission_mode": "acceptEdits"}, openai={"api": "chat"}))
    assert task.options == {"claude": {"permission_mode": "acceptEdits"}, "openai": {"api": "chat"}}


def test_planned_task_without_subtasks() -> None:
    task = task_from_dict({"title": "Plan it", "plan": True, "plan_prompt": "Refactor the parser.",
                           "plan_steps": [{"text": "```json\n[]\n```"}]})
    assert task.plan and task.subtasks == () and task.plan_prompt == "Refactor the parser."
    assert len(task.plan_steps) == 1
    assert task_from_dict({"plan": True, "plan_prompt": "x"}).title == "Planned task"


def test_stored_round_trip(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    for text in (DESIGN_EXAMPLE, SCRIPTED):
        task = load_task(write(tmp_path, text))
        again = task_from_stored(task.to_dict())
        assert again == task


# --- bare prompts -----------------------------------------------------------------------------

def test_prompt_task() -> None:
    task = prompt_task("Fix the flaky test in tests/test_io.py\nIt fails one run in ten.", backend="openai",
                       model="m", workspace="/tmp")
    assert (task.backend, task.model, task.workspace) == ("openai", "m", Path("/tmp"))
    (s,) = task.subtasks
    assert (s.id, s.title) == ("main", "Fix the flaky test in tests/test_io.py")
    assert s.prompt.endswith("one run in ten.")
    long = prompt_task("x" * 100)
    assert long.title == "x" * 60 + "…" and long.subtasks[0].title == "x" * 60
    assert prompt_task("p", title="Mine").title == "Mine"


@pytest.mark.parametrize("prompt", ["", "   \n "])
def test_empty_prompt_refused(prompt: str) -> None:
    with pytest.raises(TaskError, match="prompt: must not be empty"):
        prompt_task(prompt)


# --- file-level errors --------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="cannot read task file"):
        load_task(tmp_path / "nope.toml")
    with pytest.raises(TaskError, match="cannot read task file"):
        load_task(tmp_path)  # a directory


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="invalid TOML"):
        load_task(write(tmp_path, "title = \n"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"title = \"\xff\xfe\"\n")
    with pytest.raises(TaskError, match="not a UTF-8 text file"):
        load_task(path)


def test_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'title = "x"\n[[subtasks]]\nid = "a"\n')
    with pytest.raises(TaskError) as exc:
        load_task(path)
    assert str(exc.value) == f"{path}: subtasks[0].prompt: missing prompt"


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data,fragments", [
    ({"title": "t"}, ["subtasks", "at least one subtask"]),
    (base(colour="red"), ["unknown key 'colour'"]),
    (base(source="/etc/passwd"), ["unknown key 'source'"]),
    (base(backend="gpt"), ["backend", "unknown backend 'gpt'"]),
    (base(title=5), ["title", "expected str"]),
    (base(model=3), ["model", "expected str"]),
    (base(plan="yes"), ["plan", "expected bool"]),
    (base(subtasks={"id": "a"}), ["subtasks", "expected list"]),
    (base(subtasks=["do a"]), ["subtasks[0]", "expected dict"]),
    (base(subtasks=[{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]), ["subtasks[1].id", "duplicate"]),
    (base(subtasks=[{"id": "  ", "prompt": "x"}]), ["subtasks[0].id", "must not be empty"]),
    (base(subtasks=[{"id": "a"}]), ["subtasks[0].prompt", "missing prompt"]),
    (base(subtasks=[{"id": "a", "prompt": "  "}]), ["subtasks[0].prompt", "missing prompt"]),
    (base(subtasks=[{"id": "a", "prompt": ["x"]}]), ["subtasks[0].prompt", "expected str"]),
    (sub(check=["pytest"]), ["subtasks[0].check", "expected str"]),
    (sub(cheque="x"), ["subtasks[0]", "unknown key 'cheque'"]),
    (sub(check_timeout="soon"), ["check_timeout", "expected"]),
    (sub(check_timeout=0), ["subtasks[0].check_timeout", "must be > 0"]),
    (sub(check_timeout=-5), ["subtasks[0].check_timeout", "must be > 0"]),
    (step(fail="explode"), ["subtasks[0].steps[0].fail", "unknown fail kind 'explode'"]),
    (step(fail="cancelled"), ["subtasks[0].steps[0].fail", "unknown fail kind"]),
    (step(fail=1), ["steps[0].fail", "expected str"]),
    (step(sleep=1), ["steps[0]", "unknown key 'sleep'"]),
    (step(delay_ms=-1), ["steps[0]", ">= 0"]),
    (step(delay_ms=1.5), ["steps[0].delay_ms", "expected int"]),
    (step(after_deltas=-2), ["steps[0]", ">= 0"]),
    (step(retry_after=-1), ["steps[0].retry_after", "must be >= 0"]),
    (step(retry_after="7"), ["steps[0].retry_after", "expected"]),
    (step(message=42), ["steps[0].message", "expected str"]),
    (step(text=["a"]), ["steps[0].text", "expected str"]),
    (step(tools={"name": "x"}), ["steps[0].tools", "expected list"]),
    (step(tools=[{"args": {}}]), ["steps[0].tools[0].name", "expected str"]),
    (step(tools=[{"name": "x", "args": "."}]), ["steps[0].tools[0].args", "expected dict"]),
    (base(plan_steps=[{"fail": "nope"}]), ["plan_steps[0].fail", "unknown fail kind"]),
    (base(retry={"explosion": {"max_retries": 1}}), ["retry.explosion", "unknown error kind"]),
    (base(retry={"transient": {"max_retry": 1}}), ["retry.transient.max_retry", "unknown setting"]),
    (base(retry={"transient": 3}), ["retry.transient", "expected dict"]),
    (base(retry={"transient": {"initial_delay": -1}}), ["retry.transient.initial_delay", ">= 0"]),
    (base(retry={"transient": {"max_retries": True}}), ["retry.transient.max_retries", "expected a number"]),
    (base(retry={"transient": {"max_retries": 2.5}}), ["retry.transient.max_retries", "whole number"]),
    (base(retry={"transient": {"jitter": 1.5}}), ["retry.transient.jitter", "between 0 and 1"]),
    (base(max_attempts=0), ["max_attempts", ">= 1"]),
    (base(max_attempts=2.5), ["max_attempts", "expected int"]),
    (base(max_check_retries=-1), ["max_check_retries", ">= 0"]),
    (base(heartbeat_s=0), ["heartbeat_s", "> 0"]),
    (base(stall_s=-1), ["stall_s", "> 0"]),
    (base(max_turns=0), ["max_turns", ">= 1"]),
    (base(claude="fast"), ["claude", "expected dict"]),
    ({"plan": True}, ["plan_prompt", "what to plan"]),
    (base(plan=True, plan_prompt="x", subtasks=[{"id": "plan", "prompt": "p"}]), ["subtasks[0].id", "reserved"]),
])
def test_validation(data: dict[str, Any], fragments: list[str]) -> None:
    refused(data, *fragments)


def test_bool_is_not_a_number() -> None:
    refused(base(heartbeat_s=True), "heartbeat_s", "expected a number")


def test_task_is_frozen() -> None:
    task = task_from_dict(base())
    assert isinstance(task, Task)
    with pytest.raises(AttributeError):
        task.title = "x"  # type: ignore[misc]


def test_every_problem_is_reported_in_one_line() -> None:
    msg = refused({**sub(cheque=1, check_timeout=float("nan")), "colour": "red", "size": 3,
                   "heartbeat_s": float("inf"), "retry": {"transient": {"max_delay": float("-inf"), "x": 1}}})
    for fragment in ("7 problems", "unknown key 'colour'", "unknown key 'size'", "subtasks[0]: unknown key 'cheque'",
                     "subtasks[0].check_timeout: must be a finite number, got nan",
                     "heartbeat_s: must be a finite number, got inf",
                     "retry.transient.max_delay: must be a finite number", "retry.transient.x: unknown setting"):
        assert fragment in msg, msg


@pytest.mark.parametrize("data,fragments", [
    (base(stall_s=float("nan")), ["stall_s", "finite"]),
    (base(max_attempts=10**30), ["max_attempts", "between 1 and"]),
    (base(retry={"rate_limit": {"multiplier": 0.5}}), ["multiplier", ">= 1"]),
    (base(retry={"rate_limit": {"max_retries": 10**6}}), ["max_retries", "between 0 and"]),
    (step(retry_after=float("inf")), ["retry_after", "finite"]),
    (step(delay_ms=10**12), ["delay_ms", "between 0 and"]),
    (base(subtasks=[{"id": "a\x1b[2J", "prompt": "p"}]), ["subtasks[0].id", "control characters", "\\x1b"]),
])
def test_numbers_are_finite_and_in_range(data: dict[str, Any], fragments: list[str]) -> None:
    refused(data, *fragments)


def test_workspace_must_be_an_existing_directory(tmp_path: Path) -> None:
    refused(base(workspace=str(tmp_path / "nope")), "workspace", "does not exist")
    (tmp_path / "f").write_text("x")
    refused(base(workspace=str(tmp_path / "f")), "workspace", "not a directory")
    with pytest.raises(TaskError, match="does not exist"):
        prompt_task("hi", workspace=tmp_path / "nope")
    gone = task_from_dict(base(workspace=str(tmp_path))).to_dict() | {"workspace": str(tmp_path / "gone")}
    assert task_from_stored(gone).workspace == tmp_path / "gone"  # resuming checks it itself


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(TaskError, match="nested too deeply"):
        load_task(path)
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    refused(step(tools=[{"name": "x", "args": deep}]), "nested deeper than")


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, 'title = "' + "x" * (5 * 1024 * 1024) + '"\n')
    with pytest.raises(TaskError, match="too large"):
        load_task(path)
