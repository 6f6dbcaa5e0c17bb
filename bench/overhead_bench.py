"""What supervising an agent costs: Shepherd against the bare openai-agents Runner.

    python bench/overhead_bench.py [--steps N] [--words W] [--tools T] [--runs R] [--http] [--delay-ms D]

The same scripted conversation (N model calls, each streaming W word deltas and making T
parallel list_files/read_file calls, then a final answer) runs three ways:

  peer      ``Runner.run_streamed`` + ``stream_events()`` with an in-memory SQLiteSession:
            the work any openai-agents app does anyway (the ratios' base)
  peer_file the same with ``SQLiteSession`` on a file: the SDK's own way to keep the
            history across a crash, which Shepherd's session store also does (one
            commit per turn); printed for comparison
  backend   Shepherd's backend (``backend.attempt(ctx)``): + session handling, history
            checks, and the mapping to Shepherd events
  shepherd  the full Supervisor with a real SQLite store: + every event persisted
            (single writer, batched commits), tool ledger, heartbeats, retry bookkeeping

With ``--http`` the model is the real OpenAI chat-completions client against the loopback
fake server (tests/fakes/fake_openai.py) instead of the in-process scripted model.
Prints the median wall time per run, events per second, and each ratio to the peer.

By default the scripted model takes no time at all: a turn is ~5 ms of pure CPU, so the
ratios are Shepherd's CPU and commit cost against the SDK's own, the worst case (a real
model streams a turn for seconds, and the commits happen while it does). ``--delay-ms D``
paces every delta D real ms apart in all variants alike (e.g. ``--delay-ms 10 --runs 3``:
~100 tokens/s, a real model's pace), which shows what supervising costs at that pace.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from shepherd.core.backends.base import AttemptContext  # noqa: E402
from shepherd.core.clock import RealClock  # noqa: E402
from shepherd.core.events import new_id  # noqa: E402
from shepherd.core.task import Task, task_from_dict  # noqa: E402

CLOCK_SCALE = 0.0  # the engine's waits (none in this scenario) and the model's pacing: see --delay-ms
WORDS = "the parser swaps day and month in the slash branch so we fix the unpacking order".split()


def scenario(ws: Path, steps: int, words: int, tools: int, delay_ms: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(steps):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words))
        calls = [{"name": "list_files", "args": {"path": "."}} if k % 2 == 0
                 else {"name": "read_file", "args": {"path": "README.md"}} for k in range(tools)]
        out.append({"text": text, "tools": calls, **({"delay_ms": delay_ms} if delay_ms else {})})
    return out


def make_task(ws: Path, steps: list[dict[str, Any]], backend: str, turns: int) -> Task:
    return task_from_dict({"title": "overhead", "backend": backend, "workspace": str(ws),
                           "model": "fake-model", "max_turns": turns + 5,
                           "subtasks": [{"id": "main", "prompt": "Fix the parser.", "steps": steps}]})


def fake_turns(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"text": s["text"], "tools": s["tools"]} for s in steps] + [{"text": "All done."}]


def ctx_for(task: Task, **kw: Any) -> AttemptContext:
    sub = task.subtasks[0]
    return AttemptContext(session_id="bench", task=task, subtask=sub, attempt=1, reason="first",
                          prompt=sub.prompt, prompt_extra="", continue_history=False,
                          workspace=task.workspace, clock=RealClock(scale=CLOCK_SCALE), **kw)


async def run_peer(task: Task, api: Any, db_path: Path | None = None) -> int:
    """The bare SDK: build the agent, run it streamed, read every stream event (the
    session in memory, or in the file ``db_path``)."""
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, RunConfig, Runner, SQLiteSession

    from shepherd.core.backends.agents_common import agent_instructions
    from shepherd.core.backends.scripted import StepModel
    from shepherd.core.tools import workspace_tools

    ctx = ctx_for(task)
    if api is None:
        model: Any = StepModel(ctx, [])
        settings = ModelSettings()
    else:
        from openai import AsyncOpenAI

        model = OpenAIChatCompletionsModel(model="fake-model", openai_client=AsyncOpenAI(
            base_url=api.base_url, api_key="sk-bench", max_retries=0))
        settings = ModelSettings(include_usage=True)
    agent = Agent(name="peer", instructions=agent_instructions(task.workspace),
                  tools=workspace_tools(task.workspace, ctx.clock), model=model, model_settings=settings)
    session = SQLiteSession("peer") if db_path is None else SQLiteSession(new_id("peer"), db_path=db_path)
    result = Runner.run_streamed(agent, ctx.prompt, session=session, max_turns=task.max_turns,
                                 run_config=RunConfig(tracing_disabled=True))
    n = 0
    async for _ in result.stream_events():
        n += 1
    assert result.final_output
    session.close()
    return n


def make_backend(api: Any) -> Any:
    if api is None:
        from shepherd.core.backends.scripted import ScriptedBackend

        return ScriptedBackend()
    from shepherd.core.backends.openai_agents import OpenAIAgentsBackend

    return OpenAIAgentsBackend(api_key="sk-bench", base_url=api.base_url, api="chat_completions")


async def run_backend(task: Task, api: Any) -> int:
    n = 0
    async for _ in make_backend(api).attempt(ctx_for(task)):
        n += 1
    return n


async def run_shepherd(task: Task, api: Any, store: Any) -> Any:
    """One session through the full Supervisor on an open store (the app keeps its store
    open for its whole life, so opening the file is not part of a run)."""
    from shepherd.core.engine import Supervisor

    sup = Supervisor(store, task, backend=make_backend(api), clock=RealClock(scale=CLOCK_SCALE), interactive=False)
    status = await sup.run()
    assert status == "done", status
    await store.flush()
    # counting what was stored is the bench's work, not the run's: done after the clock stops
    return lambda: store.last_seq(sup.session_id)


async def interleaved(runs: int, variants: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """Round-robin over the variants so machine load drifts hit them all alike."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    counts: dict[str, int] = {}
    for _ in range(runs):
        for name, fn in variants.items():
            t = time.perf_counter()
            count = await fn()
            times[name].append(time.perf_counter() - t)
            counts[name] = await count() if callable(count) else count
    return {k: (statistics.median(v), counts[k]) for k, v in times.items()}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="model calls with tools (default 10)")
    ap.add_argument("--words", type=int, default=40, help="text deltas per model call (default 40)")
    ap.add_argument("--tools", type=int, default=2, help="parallel tool calls per model call (default 2)")
    ap.add_argument("--runs", type=int, default=9, help="runs per variant; the median is reported")
    ap.add_argument("--http", action="store_true", help="real OpenAI client against the loopback fake server")
    ap.add_argument("--delay-ms", type=int, default=0,
                    help="real ms between the scripted model's deltas (default 0: no model time at all)")
    args = ap.parse_args()
    global CLOCK_SCALE
    CLOCK_SCALE = 1.0 if args.delay_ms > 0 else 0.0

    tmp = Path(tempfile.mkdtemp(prefix="shepherd-bench-"))
    ws = tmp / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# bench\n" + "a line of readme text\n" * 20)
    steps = scenario(ws, args.steps, args.words, args.tools, args.delay_ms)
    fake = None
    if args.http:
        from tests.fakes.fake_openai import FakeOpenAI

        fake = FakeOpenAI()
        fake.__enter__()

    def task() -> Task:
        if fake is not None:
            fake.add(*fake_turns(steps))
            return make_task(ws, [], "openai", len(steps))
        return make_task(ws, steps, "scripted", len(steps))

    from shepherd.core.store import Store

    store = await Store.open(tmp / "shepherd.db")
    # warm up imports and caches once per variant
    peer_db = tmp / "peer.db"
    await run_peer(task(), fake)
    await run_peer(task(), fake, peer_db)
    await run_backend(task(), fake)
    await run_shepherd(task(), fake, store)

    res = await interleaved(args.runs, {
        "peer": lambda: run_peer(task(), fake),
        "peer_file": lambda: run_peer(task(), fake, peer_db),
        "backend": lambda: run_backend(task(), fake),
        "shepherd": lambda: run_shepherd(task(), fake, store),
    })
    await store.close()
    peer_t, _ = res["peer"]
    if fake is not None:
        fake.__exit__(None, None, None)

    model = "OpenAI chat completions over loopback HTTP" if args.http else "in-process scripted model"
    if args.delay_ms and not args.http:
        model += f", {args.delay_ms} ms between deltas"
    print(f"scenario: {args.steps} model calls x ({args.words} deltas + {args.tools} parallel tools) "
          f"+ final answer; {model}; median of {args.runs} runs")
    print(f"{'variant':<10} {'time/run':>10} {'events':>8} {'events/s':>10} {'vs peer':>8}")
    for label, (t, n) in res.items():
        print(f"{label:<10} {t * 1000:>8.1f}ms {n:>8} {n / t:>10.0f} {t / peer_t:>7.2f}x")
    file_t, _ = res["peer_file"]
    print(f"shepherd vs peer_file (the SDK's session on a file): {res['shepherd'][0] / file_t:.2f}x")
    print("peer = bare openai-agents Runner.run_streamed (session in memory); events = SDK stream events "
          "(peers), Shepherd events yielded (backend), events committed to SQLite (shepherd)")


if __name__ == "__main__":
    asyncio.run(main())
