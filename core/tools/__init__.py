"""Workspace tools (files, shell) for the openai-agents based backends."""

from shepherd.core.tools.spawn import SandboxUnavailable, SpawnPolicy, check_sandbox
from shepherd.core.tools.workspace import (
    ERROR_PREFIX,
    MAX_OUTPUT_CHARS,
    READ_ONLY_TOOLS,
    TIMEOUT_EXIT_CODE,
    CommandResult,
    ConfinementError,
    execute,
    is_error_output,
    list_files,
    read_file,
    resolve_in_workspace,
    run_check,
    run_command,
    shell_confinement,
    truncate_middle,
    workspace_tools,
    write_file,
)

__all__ = [
    "SandboxUnavailable", "SpawnPolicy", "check_sandbox",
    "ERROR_PREFIX", "MAX_OUTPUT_CHARS", "READ_ONLY_TOOLS", "TIMEOUT_EXIT_CODE", "CommandResult", "ConfinementError", "execute",
    "is_error_output", "list_files", "read_file", "resolve_in_workspace", "run_check",
    "run_command", "shell_confinement", "truncate_middle", "workspace_tools", "write_file",
]
