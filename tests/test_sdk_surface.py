"""The installed SDKs still have every class, field and method Shepherd relies on.

A dependency bump that renames or drops one of them fails here, with the name, instead
of deep inside a run. Two layers: explicit lists of what the backends call (attributes,
dataclass fields, parameters), and a scan of every ``from <sdk> import ...`` in core/ and
tui/ so a new use is covered without editing this file.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SDK_ROOTS = ("claude_agent_sdk", "agents", "openai")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _params(fn: Any) -> set[str]:
    return set(inspect.signature(fn).parameters)


# --- claude-agent-sdk ------------------------------------------------------------------------


def test_claude_client_and_options() -> None:
    import claude_agent_sdk as sdk

    for method in ("connect", "query", "receive_response", "receive_messages", "interrupt", "disconnect"):
        assert inspect.iscoroutinefunction(getattr(sdk.ClaudeSDKClient, method)) or \
            inspect.isasyncgenfunction(getattr(sdk.ClaudeSDKClient, method)), method
    assert {"options", "transport"} <= _params(sdk.ClaudeSDKClient.__init__)
    needed = {"resume", "resume_session_at", "fork_session", "session_id", "include_partial_messages", "hooks",
              "session_store", "session_store_flush", "cwd", "env", "stderr", "model", "permission_mode",
              "allowed_tools", "disallowed_tools", "max_turns", "max_budget_usd", "setting_sources", "cli_path"}
    assert needed <= _fields(sdk.ClaudeAgentOptions), needed - _fields(sdk.ClaudeAgentOptions)
    assert {"matcher", "hooks", "timeout"} <= _fields(sdk.HookMatcher)


def test_claude_messages_and_blocks() -> None:
    import claude_agent_sdk as sdk

    expect = {
        sdk.AssistantMessage: {"content", "model", "parent_tool_use_id", "error", "usage", "message_id", "uuid",
                               "session_id"},
        sdk.UserMessage: {"content", "uuid", "parent_tool_use_id"},
        sdk.SystemMessage: {"subtype", "data"},
        sdk.ResultMessage: {"subtype", "is_error", "session_id", "total_cost_usd", "usage", "result", "errors",
                            "api_error_status", "terminal_reason"},
        sdk.StreamEvent: {"uuid", "session_id", "event", "parent_tool_use_id"},
        sdk.ToolUseBlock: {"id", "name", "input"},
        sdk.ToolResultBlock: {"tool_use_id", "content", "is_error"},
        sdk.TextBlock: {"text"},
        sdk.ThinkingBlock: {"thinking", "signature"},
    }
    for cls, names in expect.items():
        assert names <= _fields(cls), (cls.__name__, names - _fields(cls))
    # the error kinds the CLI reports on an AssistantMessage (core.errors reads them)
    assert {"authentication_failed", "rate_limit", "server_error", "invalid_request", "unknown"} <= \
        set(sdk.types.AssistantMessageError.__args__)


def test_claude_errors() -> None:
    import claude_agent_sdk as sdk

    assert issubclass(sdk.CLINotFoundError, sdk.CLIConnectionError)
    assert issubclass(sdk.ResultError, sdk.ProcessError)
    for cls in (sdk.CLIConnectionError, sdk.ProcessError, sdk.CLIJSONDecodeError):
        assert issubclass(cls, sdk.ClaudeSDKError)
    err = sdk.ResultError("boom", data={"subtype": "error_max_turns", "api_error_status": 429,
                                        "terminal_reason": "api_error", "errors": ["x"], "session_id": "s"},
                          exit_code=1)
    for attr in ("subtype", "errors", "api_error_status", "terminal_reason", "session_id", "exit_code"):
        assert hasattr(err, attr), attr
    assert err.api_error_status == 429
    pe = sdk.ProcessError("died", exit_code=1, stderr="tail")
    assert (pe.exit_code, pe.stderr) == (1, "tail")


def test_claude_sessions_and_store_conformance() -> None:
    import claude_agent_sdk as sdk
    from claude_agent_sdk.testing import run_session_store_conformance

    for name in ("project_key_for_directory", "get_session_messages_from_store", "get_session_messages",
                 "fold_session_summary", "InMemorySessionStore", "SessionStore", "SessionMessage"):
        assert hasattr(sdk, name), name
    assert {"type", "uuid", "message"} <= _fields(sdk.SessionMessage)
    assert {"directory"} <= _params(sdk.get_session_messages_from_store)
    asyncio.run(run_session_store_conformance(sdk.InMemorySessionStore))


def test_bundled_cli_is_there_and_speaks_what_we_rely_on() -> None:
    import claude_agent_sdk as sdk

    cli = Path(sdk.__file__).parent / "_bundled" / "claude"
    assert cli.is_file() and os.access(cli, os.X_OK)
    data = cli.read_bytes()
    # flags and env vars the backend passes, and the API error the CLI turns into
    # "API Error: 400 due to tool use concurrency issues" (core.errors matches that text)
    for needle in (b"resume-session-at", b"fork-session", b"session-mirror", b"CLAUDE_CODE_MAX_RETRIES",
                   b"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", b"due to tool use concurrency issues",
                   b"`tool_use` ids were found without `tool_result` blocks immediately after"):
        assert needle in data, needle


# --- openai-agents and openai ------------------------------------------------------------------


def test_agents_surface() -> None:
    import agents
    from agents import exceptions

    assert inspect.signature(agents.Runner.run_streamed)
    assert {"starting_agent", "input", "max_turns", "run_config", "session"} <= _params(agents.Runner.run_streamed)
    assert {"mode"} <= _params(agents.RunResultStreaming.cancel)
    assert hasattr(agents.RunResultStreaming, "stream_events")
    assert "final_output" in _fields(agents.RunResultStreaming)
    assert {"name", "instructions", "tools", "model", "model_settings"} <= _fields(agents.Agent)
    assert {"name_override", "failure_error_function"} <= _params(agents.function_tool)
    assert {"tracing_disabled", "workflow_name", "tool_not_found_behavior"} <= _fields(agents.RunConfig)
    assert {"include_usage"} <= _fields(agents.ModelSettings)
    assert {"model", "openai_client"} <= _params(agents.OpenAIResponsesModel.__init__)
    assert {"model", "openai_client"} <= _params(agents.OpenAIChatCompletionsModel.__init__)
    for name in ("get_items", "add_items", "pop_item", "clear_session"):
        assert callable(getattr(agents.SQLiteSession, name)), name
    assert hasattr(agents.ItemHelpers, "text_message_output")
    for name in ("ModelBehaviorError", "ModelTimeoutError", "MaxTurnsExceeded", "ModelRefusalError", "UserError",
                 "AgentsException"):
        assert issubclass(getattr(exceptions, name), Exception), name


def test_openai_surface() -> None:
    import openai

    for name in ("APIStatusError", "BadRequestError", "RateLimitError", "AuthenticationError",
                 "InternalServerError", "APIConnectionError", "APITimeoutError", "APIError",
                 "APIResponseValidationError", "ContentFilterFinishReasonError"):
        assert issubclass(getattr(openai, name), Exception), name
    for name in ("BadRequestError", "RateLimitError", "AuthenticationError", "InternalServerError"):
        assert issubclass(getattr(openai, name), openai.APIStatusError), name
    assert issubclass(openai.APITimeoutError, openai.APIConnectionError)
    assert {"api_key", "base_url", "max_retries"} <= _params(openai.AsyncOpenAI.__init__)
    assert {"status_code", "response", "body"} <= set(vars(openai.APIStatusError("m", response=_response(429),
                                                                                  body=None)))


def _response(status: int) -> Any:
    import httpx2 as httpx  # openai 3.x builds its responses with the httpx2 fork

    return httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/v1/x"))


# --- every import in core/ and tui/ -------------------------------------------------------------


def _sdk_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) for each ``from <sdk>... import name`` in core/ and tui/."""
    out = []
    for base in ("core", "tui"):
        for path in sorted((ROOT / base).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                        and node.module.split(".")[0] in SDK_ROOTS:
                    for alias in node.names:
                        out.append((str(path.relative_to(ROOT)), node.module, alias.name))
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] in SDK_ROOTS:
                            out.append((str(path.relative_to(ROOT)), alias.name, ""))
    return out


def test_every_sdk_import_in_the_tree_resolves() -> None:
    found = _sdk_imports()
    assert any(m.startswith("claude_agent_sdk") for _, m, _ in found)  # the scan sees the backends
    assert any(m.startswith("agents") for _, m, _ in found)
    missing = []
    for where, module, name in found:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{where}: import {module}: {e}")
            continue
        if name and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{where}: {module}.{name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("module,names", [
    # classes core/errors.py looks up by name in sys.modules (a rename would silently misclassify)
    ("openai", ["APIResponseValidationError", "APIStatusError", "APIConnectionError", "APIError",
                "ContentFilterFinishReasonError"]),
    ("agents.exceptions", ["MaxTurnsExceeded", "ModelRefusalError", "InputGuardrailTripwireTriggered",
                           "OutputGuardrailTripwireTriggered", "ToolInputGuardrailTripwireTriggered",
                           "ToolOutputGuardrailTripwireTriggered", "ModelTimeoutError", "ModelBehaviorError",
                           "UserError", "ToolTimeoutError", "MCPToolCancellationError"]),
    ("claude_agent_sdk._errors", ["ResultError", "CLINotFoundError", "CLIConnectionError", "CLIJSONDecodeError",
                                  "MessageParseError", "ProcessError"]),
])
def test_classes_classify_looks_up_by_name(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    assert [n for n in names if not isinstance(getattr(mod, n, None), type)] == []
