"""Small modal dialogs: confirm, a note for the agent, starting a run (``RunModal``, and
``NewRunModal``: a task file or a prompt, in a worktree or not), and how to retry a
worktree session's subtask (``RetryModal``).

Each one dismisses with its result (``bool``, ``str | None``, ``Task | None``), so
callers use ``push_screen(Modal(...), callback)`` or ``await push_screen_wait(...)``.
Their look is in tui/css/dialogs.tcss (tui/stylesheet.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from shepherd.core.task import BACKENDS, Task, TaskError, load_task, prompt_task
from shepherd.core.text import safe
from shepherd.tui.stylesheet import CSSSection


class ConfirmModal(CSSSection, ModalScreen[bool]):
    """Ask a yes/no question. y / Enter on the focused button confirms, n / Esc declines."""

    CSS_SECTION = "dialogs"  # tui/css/dialogs.tcss

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n", "answer(False)", "No", show=False),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, question: str, *, title: str = "Confirm", yes: str = "Yes", no: str = "No",
                 danger: bool = False) -> None:
        super().__init__()
        self.question = question
        self.title_text = title
        self.yes = yes
        self.no = no
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.question, id="question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.no} (n)", id="no")
                yield Button(f"{self.yes} (y)", id="yes", variant="error" if self.danger else "primary")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class NoteModal(CSSSection, ModalScreen[str | None]):
    """Type a note for the agent; it goes into the next prompt. Dismisses with the text or None."""

    CSS_SECTION = "dialogs"  # tui/css/dialogs.tcss

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, title: str = "Note for the agent", placeholder: str = "e.g. run the tests before editing",
                 initial: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="dialog-title")
            yield Input(value=self.initial, placeholder=self.placeholder, id="note")
            yield Static("", id="note-error", classes="dialog-error -empty")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Send", id="send", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#note", Input).focus()

    @on(Input.Submitted, "#note")
    @on(Button.Pressed, "#send")
    def _send(self) -> None:
        text = self.query_one("#note", Input).value.strip()
        if not text:
            error = self.query_one("#note-error", Static)
            error.update("The note is empty.")
            error.remove_class("-empty")
            return
        self.dismiss(text)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class RunModal(CSSSection, ModalScreen[Task | None]):
    """Start a run from a task file (``mode="file"``) or a bare prompt (``mode="prompt"``).

    Validates with ``core.task`` before closing: a bad file shows its one-line
    ``TaskError`` inline and the dialog stays open. Dismisses with the Task or None.
    """

    CSS_SECTION = "dialogs"  # tui/css/dialogs.tcss

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, mode: str = "file", *, initial: str = "", backend: str = "claude",
                 workspace: Path | str | None = None) -> None:
        super().__init__()
        if mode not in ("file", "prompt"):
            raise ValueError(f"RunModal mode must be 'file' or 'prompt', not {mode!r}")
        self.mode = mode
        self.initial = initial
        self.backend = backend if backend in BACKENDS else "claude"
        self.workspace = str(workspace or Path.cwd())
        self._loading = False

    def compose(self) -> ComposeResult:
        with Vertical():
            if self.mode == "file":
                yield Label("Run a task file", classes="dialog-title")
                yield Label("Task file (TOML)", classes="field-label")
                yield Input(value=self.initial, placeholder="path/to/task.toml", id="path")
            else:
                yield Label("Run a prompt", classes="dialog-title")
                yield Label("Prompt", classes="field-label")
                yield Input(value=self.initial, placeholder="What should the agent do?", id="prompt")
                with Horizontal(id="row"):
                    with Vertical(classes="-left"):
                        yield Label("Backend", classes="field-label")
                        yield Select([(b, b) for b in BACKENDS], value=self.backend, allow_blank=False,
                                     id="backend")
                    with Vertical():
                        yield Label("Model (optional)", classes="field-label")
                        yield Input(placeholder="backend default", id="model")
                yield Label("Workspace", classes="field-label")
                yield Input(value=self.workspace, id="workspace")
            yield Static("", id="run-error", classes="dialog-error -empty")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Run", id="run", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#path" if self.mode == "file" else "#prompt", Input).focus()

    @property
    def error_text(self) -> str:
        found = self.query("#run-error")  # empty while a dismissal unmounts the dialog
        return str(found.first(Static).content) if found else ""

    def show_error(self, message: str) -> None:
        error = self.query_one("#run-error", Static)
        # the message quotes the task file and its path: text, never markup
        error.update(Content(safe(message.splitlines()[0])) if message else "")
        error.set_class(not message, "-empty")

    def build_task(self) -> Task:
        """The Task the dialog describes; raises TaskError when it cannot run."""
        if self.mode == "file":
            return load_task(self._task_path())
        prompt = self.query_one("#prompt", Input).value
        backend = str(self.query_one("#backend", Select).value)
        model = self.query_one("#model", Input).value.strip() or None
        workspace = Path(self.query_one("#workspace", Input).value.strip() or ".").expanduser()
        if not workspace.is_dir():
            raise TaskError(f"workspace: {workspace} is not a directory")
        return prompt_task(prompt, backend=backend, model=model, workspace=workspace.resolve())

    def _task_path(self) -> Path:
        raw = self.query_one("#path", Input).value.strip()
        if not raw:
            raise TaskError("task file: enter a path to a .toml task file")
        return Path(raw).expanduser()

    @on(Input.Submitted)
    @on(Button.Pressed, "#run")
    def _run(self) -> None:
        if self._loading:  # a second Enter while the file is read: one run, not two
            return
        try:
            if self.mode == "file":
                # In a worker, off the event loop: a task file may be a pipe that takes
                # seconds (core.task bounds the wait); the dialog keeps working meanwhile.
                path = self._task_path()
                self._loading = True
                self.show_error(f"reading {path}…")
                self.run_worker(self._load(path), name="load-task", exit_on_error=False)
                return
            task = self.build_task()
        except TaskError as e:
            self.show_error(str(e))
            return
        self.dismiss(task)

    async def _load(self, path: Path) -> None:
        try:
            task = await asyncio.to_thread(load_task, path)
        except TaskError as e:
            self.show_error(str(e))
            return
        finally:
            self._loading = False
        self.dismiss(task)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class RetryModal(CSSSection, ModalScreen[str | None]):
    """How to retry a finished subtask of a worktree session: keep its files (``"keep"``,
    k) or restore them to the start of the subtask (``"clean"``, c); Esc cancels (None)."""

    CSS_SECTION = "dialogs"  # tui/css/dialogs.tcss

    BINDINGS = [
        Binding("k", "choose('keep')", "Keep the files", show=False),
        Binding("c", "choose('clean')", "Restore them", show=False),
        Binding("escape", "choose('')", "Cancel"),
    ]

    def __init__(self, subtask: str) -> None:
        super().__init__()
        self.subtask = subtask

    def compose(self) -> ComposeResult:
        with Vertical():
            # the subtask's id and title come from the task: text, never markup
            yield Label(Content(f"Retry {safe(self.subtask)}"), classes="dialog-title")
            yield Static("Keep the files as the last attempt left them, or restore them to the start "
                         "of this subtask (the subtasks after it run again).", id="question")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Keep the files (k)", id="keep")
                yield Button("Restore them (c)", id="clean", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, how: str) -> None:
        self.dismiss(how or None)


def looks_like_task_file(raw: str) -> bool:
    """A task file rather than a prompt: one line naming a .toml file or an existing file."""
    if "\n" in raw or len(raw) > 4096:
        return False
    path = Path(raw).expanduser()
    return raw.endswith(".toml") or path.is_file()


def build_run_task(raw: str, worktree: bool, backend: str, workspace: str) -> Task:
    """The Task a "new run" describes (reads the file, asks git: synchronous, for a
    thread); raises TaskError with one line."""
    if not raw:
        raise TaskError("enter a task file path or a prompt")
    if looks_like_task_file(raw):
        task = load_task(Path(raw).expanduser())
        if worktree and task.isolation != "worktree":
            from shepherd.core.worktree import isolation_refusal

            refused = isolation_refusal(task.workspace)
            if refused:
                raise TaskError(f'isolation "worktree": {refused}')
            task = dataclasses.replace(task, isolation="worktree")
        return task
    ws = Path(workspace or ".").expanduser()
    if not ws.is_dir():
        raise TaskError(f"workspace: {ws} is not a directory")
    return prompt_task(raw, backend=backend, workspace=ws.resolve(), isolation="worktree" if worktree else "none")


class NewRunModal(CSSSection, ModalScreen[Task | None]):
    """"New run": a task file path or a prompt, the backend for a prompt (scripted by
    default), its workspace, and whether the run gets its own git worktree. Checked before
    closing (off the event loop: reading the file and asking git may take a moment); bad
    input is one line in the dialog. Dismisses with the Task or None."""

    CSS_SECTION = "dialogs"  # tui/css/dialogs.tcss

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, backend: str = "scripted", workspace: Path | str | None = None,
                 worktree: bool = False) -> None:
        super().__init__()
        self.backend = backend if backend in BACKENDS else "scripted"
        self.workspace = str(workspace or Path.cwd())
        self.worktree = worktree
        self._loading = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("New run", classes="dialog-title")
            yield Label("Task file (.toml) or a prompt", classes="field-label")
            yield Input(placeholder="path/to/task.toml, or what the agent should do", id="what")
            with Horizontal(id="row"):
                with Vertical(classes="-left"):
                    yield Label("Backend (for a prompt)", classes="field-label")
                    yield Select([(b, b) for b in BACKENDS], value=self.backend, allow_blank=False, id="backend")
                with Vertical():
                    yield Label("Isolation", classes="field-label")
                    yield Checkbox("own git worktree", value=self.worktree, id="worktree")
            yield Label("Workspace (for a prompt)", classes="field-label")
            yield Input(value=self.workspace, id="workspace")
            yield Static("", id="run-error", classes="dialog-error -empty")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Run", id="run", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#what", Input).focus()

    @property
    def error_text(self) -> str:
        found = self.query("#run-error")  # empty while a dismissal unmounts the dialog
        return str(found.first(Static).content) if found else ""

    def show_error(self, message: str) -> None:
        error = self.query_one("#run-error", Static)
        error.update(Content(safe(message.splitlines()[0])) if message else "")
        error.set_class(not message, "-empty")

    def values(self) -> dict[str, object]:
        """What the dialog holds (read on the event loop; ``build_run_task`` runs in a thread)."""
        return dict(raw=self.query_one("#what", Input).value.strip(),
                    worktree=self.query_one("#worktree", Checkbox).value,
                    backend=str(self.query_one("#backend", Select).value),
                    workspace=self.query_one("#workspace", Input).value.strip())

    @on(Input.Submitted)
    @on(Button.Pressed, "#run")
    def _run(self) -> None:
        if self._loading:  # a second Enter while it is checked: one run, not two
            return
        self._loading = True
        self.show_error("checking…")
        self.run_worker(self._check(), name="check-run", exit_on_error=False)

    async def _check(self) -> None:
        try:
            task = await asyncio.to_thread(build_run_task, **self.values())  # type: ignore[arg-type]
        except TaskError as e:
            self.show_error(str(e))
            return
        except Exception as e:  # noqa: BLE001 - an unreadable file, git gone: one line, the dialog stays
            self.show_error(f"cannot start: {e}")
            return
        finally:
            self._loading = False
        self.dismiss(task)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
