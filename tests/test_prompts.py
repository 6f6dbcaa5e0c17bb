"""Every text Shepherd adds to a prompt: content, truncation, plan parsing."""

from __future__ import annotations

import pytest

from shepherd.core import prompts
from shepherd.core.errors import CheckFailed, ErrorInfo, classify


def info(kind: str, message: str = "boom", detail: str = "") -> ErrorInfo:
    return ErrorInfo(kind, message, "X", None, True, None, detail)


def test_tool_concurrency_context() -> None:
    text = prompts.retry_context(info("tool_concurrency"), 2, 5, "coding")
    assert "ONE tool at a time" in text
    assert "wait for its result" in text
    assert "Do not call tools in parallel" in text and "read files one by one" in text
    assert "retry 2 of 5" in text
    assert "do not redo finished work" in text
    assert text.startswith("[Shepherd]")
    assert "planning" not in text


@pytest.mark.parametrize("kind,cause", [("rate_limit", "rate limit"), ("transient", "temporary API or network error"),
                                        ("stream_broken", "stream that broke off"), ("unknown", "unexpected error")])
def test_interruption_contexts(kind: str, cause: str) -> None:
    text = prompts.retry_context(info(kind, "HTTP 503 slow down"), 1, 5, "coding")
    assert "your previous attempt was interrupted by" in text.lower()
    assert cause in text
    assert "continue where you left off" in text.lower()
    assert "do not redo finished work" in text
    assert "HTTP 503 slow down" in text
    assert "retry 1 of 5" in text


def test_planning_phase_is_named() -> None:
    text = prompts.retry_context(info("transient"), 1, 5, "planning")
    assert "planning phase" in text and "```json" in text


def test_check_failed_context_includes_command_and_truncated_output() -> None:
    output = "FIRST LINE\n" + ("x" * 10_000) + "\nLAST LINE: 1 failed"
    ei = classify(CheckFailed("pytest -q tests/test_dates.py", output, 1))
    text = prompts.retry_context(ei, 1, 2, "coding")
    assert "pytest -q tests/test_dates.py" in text and "exit code 1" in text
    assert "FIRST LINE" in text and "LAST LINE: 1 failed" in text
    assert "characters omitted" in text
    assert len(text) < prompts.OUTPUT_LIMIT + 1000
    assert "Fix the cause" in text and "Do not weaken" in text


def test_check_failed_without_output() -> None:
    text = prompts.retry_context(info("check_failed", "check `make` timed out"), 1, 2)
    assert "(no output)" in text and "make" in text


def test_images_rejected_context() -> None:
    text = prompts.retry_context(info("images_rejected"), 1, 1)
    assert "images" in text and "removed" in text


def test_truncate_middle() -> None:
    assert prompts.truncate_middle("short", 100) == "short"
    text = "a" * 50 + "b" * 50
    out = prompts.truncate_middle(text, 40)
    assert out.startswith("a" * 10) and out.endswith("b" * 30) and "60 characters omitted" in out


def test_long_error_message_is_clipped() -> None:
    text = prompts.retry_context(info("unknown", "e" * 5000), 1, 2)
    assert len(text) < 800


def test_repair_notice() -> None:
    text = prompts.repair_notice("Bash(command='pytest -q') with no result")
    assert "rewound" in text and "Bash(command='pytest -q')" in text
    assert "one tool at a time" in text
    assert "the last unfinished tool call" in prompts.repair_notice("")


def test_note_context() -> None:
    assert prompts.note_context([]) == ""
    assert prompts.note_context(["  ", ""]) == ""
    one = prompts.note_context(["use the v2 API"])
    assert "note" in one and one.endswith("use the v2 API")
    two = prompts.note_context(["first", "second"])
    assert "- first\n- second" in two


def test_pause_note() -> None:
    assert prompts.pause_note("") == ""
    assert prompts.pause_note("  \n") == ""
    text = prompts.pause_note("look at utils.py first\n")
    assert "paused" in text and text.endswith("look at utils.py first")


def test_plan_prompt() -> None:
    text = prompts.plan_prompt("Fix the parser", "The date parser fails on ISO weeks.")
    assert "Fix the parser" in text and "ISO weeks" in text
    assert "```json" in text and '"id"' in text and '"title"' in text and '"prompt"' in text
    assert "JSON array" in text
    # the example in the prompt parses
    assert prompts.parse_plan(text)[0]["id"] == "find"


GOOD = """Here is my plan.

```json
[
  {"id": "find", "title": "Find the bug", "prompt": "Run the tests."},
  {"id": "fix", "title": "Fix it", "prompt": "  Fix the parser.  "}
]
```
Done."""


def test_parse_plan_good() -> None:
    plan = prompts.parse_plan(GOOD)
    assert plan == [
        {"id": "find", "title": "Find the bug", "prompt": "Run the tests."},
        {"id": "fix", "title": "Fix it", "prompt": "Fix the parser."},
    ]


@pytest.mark.parametrize("text", [
    '[{"title": "A", "prompt": "do a"}]',  # bare JSON, no fence
    'Plan:\n```\n[{"title": "A", "prompt": "do a"}]\n```',  # fence without a language
    '```json\n{"subtasks": [{"title": "A", "prompt": "do a"}]}\n```',  # wrapped in an object
    'I think [this] is it:\n```json\n[{"title": "A", "prompt": "do a"}]\n```',  # brackets in prose
])
def test_parse_plan_tolerant_forms(text: str) -> None:
    assert prompts.parse_plan(text) == [{"id": "s1", "title": "A", "prompt": "do a"}]


def test_parse_plan_defaults_title_from_prompt() -> None:
    assert prompts.parse_plan('[{"id": 3, "prompt": "Run all tests\\nthen report"}]') == [
        {"id": "3", "title": "Run all tests", "prompt": "Run all tests\nthen report"}]


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("I could not make a plan.", "no JSON array"),
    ("```json\n[{\"id\": \"a\", \"prompt\": \"x\",]\n```", "no JSON array"),
    ("```json\n[]\n```", "empty"),
    ("```json\n[\"do everything\"]\n```", "not an object"),
    ("```json\n[{\"id\": \"a\", \"title\": \"A\"}]\n```", "no prompt"),
    ("```json\n[{\"id\": \"a\", \"prompt\": \"x\"}, {\"id\": \"a\", \"prompt\": \"y\"}]\n```", "duplicate id"),
    ("```json\n[{\"id\": \"a b/c\", \"prompt\": \"x\"}]\n```", "short word"),
    ("```json\n[{\"id\": \"a\", \"title\": 5, \"prompt\": \"x\"}]\n```", "title must be a string"),
    ("```json\n{\"plan\": 1}\n```", "no JSON array"),
    ("```json\n[{\"id\": \"plan\", \"prompt\": \"x\"}]\n```", "reserved"),
])
def test_parse_plan_bad(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        prompts.parse_plan(text)


def test_parse_plan_limits_size() -> None:
    many = "[" + ",".join(f'{{"prompt": "p{i}"}}' for i in range(prompts.MAX_PLAN_SUBTASKS + 1)) + "]"
    with pytest.raises(ValueError, match="at most"):
        prompts.parse_plan(many)


def test_plan_retry_context() -> None:
    text = prompts.plan_retry_context("subtask 2 has no prompt")
    assert "subtask 2 has no prompt" in text and "```json" in text


def test_fixed_texts() -> None:
    assert prompts.final_message_when_steps_run_out()
    out = prompts.interrupted_tool_output()
    assert "interrupted" in out and "did not finish" in out


def test_parse_plan_prefers_the_plan_over_stray_brackets() -> None:
    text = 'As noted in [1] and ["x"], the plan is [{"title": "A", "prompt": "do a"}]'
    assert prompts.parse_plan(text) == [{"id": "s1", "title": "A", "prompt": "do a"}]


def test_invalid_plan_context() -> None:
    from shepherd.core.errors import PlanInvalid

    ei = classify(PlanInvalid("subtask 2 has no prompt"))
    assert (ei.kind, ei.message) == ("check_failed", "the plan could not be used: subtask 2 has no prompt")
    text = prompts.retry_context(ei, 1, 2, "planning")
    assert "Your plan could not be used: subtask 2 has no prompt" in text
    assert "```json" in text and "retry 1 of 2" in text
    assert "Do not weaken" not in text
