"""The OpenAI Agents SDK backend: ``Runner.run_streamed`` with our per-subtask Session and
the workspace tools, against OpenAI or any OpenAI-compatible server.

Configuration (nothing secret is ever logged or stored):
- ``OPENAI_API_KEY`` (required; a compatible server that ignores keys still needs some value)
- ``OPENAI_BASE_URL`` or ``[openai] base_url`` in the task file: a compatible server
- ``[openai] api = "responses" | "chat_completions"``: the API flavour. Default: "responses"
  for api.openai.com, "chat_completions" for any other base URL (what compatible servers
  implement).
- model: the task's ``model``, else ``[openai] model``, else DEFAULT_MODEL.

The client is built with ``max_retries=0`` so the supervisor sees (and classifies, and
bounds) every failure; the SDK's own runner retries stay off (no retry policy).

Tool approvals (``ctx.approvals``): openai-agents' own human-in-the-loop, shared with the
scripted backend in agents_attempt (``needs_approval``, ``result.interruptions``, the run
state saved before a call is asked, resumed after the answers).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

from shepherd.core.backends.agents_attempt import run_agent_attempt, tools_for
from shepherd.core.backends.agents_common import SessionFactory, agent_instructions
from shepherd.core.backends.base import AttemptContext, BackendUnavailable, NoCredentials
from shepherd.core.events import Event
from shepherd.core.records import record
from shepherd.core.task import Task

DEFAULT_MODEL = "gpt-4.1"
APIS = ("responses", "chat_completions")
NO_KEY_MESSAGE = ("OpenAI backend needs OPENAI_API_KEY (or OPENAI_BASE_URL and OPENAI_API_KEY "
                  "for a compatible server)")


@record(frozen=True)
class OpenAISettings:
    api_key: str
    base_url: str | None
    api: str
    model: str

    def __repr__(self) -> str:  # never show the key
        return f"OpenAISettings(base_url={self.base_url!r}, api={self.api!r}, model={self.model!r})"


def default_api(base_url: str | None) -> str:
    if not base_url:
        return "responses"
    host = (urlparse(base_url).hostname or "").lower()
    return "responses" if host == "api.openai.com" else "chat_completions"


class OpenAIAgentsBackend:
    """``Backend`` for ``backend = "openai"``. Constructor arguments override the
    environment and the task's ``[openai]`` options (for tests and embedding)."""

    name = "openai"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, api: str | None = None,
                 model: str | None = None, session_factory: SessionFactory | None = None) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._api = api
        self._model = model
        self._session_factory = session_factory
        # one client per (event loop, key, base URL): building one costs ~60 ms (TLS context)
        self._client: Any = None
        self._client_key: tuple[int, str, str | None] | None = None

    def __repr__(self) -> str:
        return f"OpenAIAgentsBackend(base_url={self._base_url!r}, api={self._api!r}, model={self._model!r})"

    def check_available(self, task: Task) -> None:
        """Fail before anything runs (raises BackendUnavailable): no key, or bad
        ``[openai]`` options. Cheap: no SDK import, no network."""
        self.settings_for(task)

    def settings(self, ctx: AttemptContext) -> OpenAISettings:
        return self.settings_for(ctx.task)

    def settings_for(self, task: Task) -> OpenAISettings:
        """Resolve the configuration; raises BackendUnavailable before any network call."""
        opts: dict[str, Any] = dict(task.options.get("openai", {}) or {})
        key = self._api_key or os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise NoCredentials(NO_KEY_MESSAGE)
        base_url = self._base_url or opts.get("base_url") or os.environ.get("OPENAI_BASE_URL", "").strip() or None
        api = self._api or opts.get("api") or default_api(base_url)
        if api not in APIS:
            raise BackendUnavailable(f"[openai] api must be one of {', '.join(APIS)}, got {api!r}")
        model = self._model or task.model or opts.get("model") or DEFAULT_MODEL
        return OpenAISettings(api_key=key, base_url=base_url, api=api, model=str(model))

    def _client_for(self, s: OpenAISettings) -> Any:
        from openai import AsyncOpenAI

        key = (id(asyncio.get_running_loop()), s.api_key, s.base_url)
        if self._client is None or self._client_key != key:
            # max_retries=0: no hidden client retries, the supervisor owns every retry
            self._client = AsyncOpenAI(api_key=s.api_key, base_url=s.base_url, max_retries=0)
            self._client_key = key
        return self._client

    async def aclose(self) -> None:
        """Close the cached HTTP client (optional; it holds only pooled connections)."""
        if self._client is not None:
            client, self._client, self._client_key = self._client, None, None
            await client.close()

    async def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        s = self.settings(ctx)
        from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel

        client = self._client_for(s)
        if s.api == "chat_completions":
            model: Any = OpenAIChatCompletionsModel(model=s.model, openai_client=client)
            model_settings = ModelSettings(include_usage=True)
        else:
            model = OpenAIResponsesModel(model=s.model, openai_client=client)
            model_settings = ModelSettings()
        agent = Agent(
            name="shepherd",
            instructions=agent_instructions(ctx.workspace, ctx.task),
            tools=tools_for(ctx),
            model=model,
            model_settings=model_settings,
        )
        ctx.log.debug("openai attempt: api=%s model=%s custom_base_url=%s", s.api, s.model, bool(s.base_url))
        async for ev in run_agent_attempt(ctx, agent, self._session_factory):
            yield ev


__all__ = ["OpenAIAgentsBackend", "OpenAISettings", "DEFAULT_MODEL", "NO_KEY_MESSAGE", "default_api"]
