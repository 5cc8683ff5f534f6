"""Every exception the SDK raises.

The names are the seed API's (`E2BException`, `SandboxException`, `TimeoutException`,
`APIError`, `AuthenticationError`, `RateLimitException`, `NotFoundError`, `FilesystemError`,
`ProcessError`, `TerminalError`, `CodeExecutionError`), and the official `e2b` SDK's names are
aliases or subclasses of them, so code written for `e2b_code_interpreter` catches the same
errors after changing only its import.
"""

from __future__ import annotations

from typing import Optional


class E2BException(Exception):
    """Base class of every error the SDK raises."""

    status_code: Optional[int] = None
    """HTTP status of the response that produced the error, when there was one."""

    def __init__(self, *args: object, status_code: Optional[int] = None) -> None:
        super().__init__(*args)
        self.status_code = status_code


class SandboxException(E2BException):
    """A sandbox operation failed (the sandbox, its agent or its code interpreter said no)."""


class TimeoutException(SandboxException):
    """An operation ran out of time: a request, a command, a code execution, or the sandbox itself."""


class APIError(SandboxException):
    """The control plane (the `/sandboxes` API) answered with an error."""


class AuthenticationError(APIError):
    """The API key (or the sandbox's access token) is missing or was refused."""


class RateLimitException(APIError):
    """The server refused the request because too many were made (HTTP 429)."""


class NotFoundError(SandboxException):
    """What the request named does not exist: a sandbox, a file, a process, a context."""


class InvalidArgumentException(SandboxException):
    """The request was malformed or named something in a way the server refused."""


class NotEnoughSpaceException(SandboxException):
    """The sandbox's disk is full."""


class FilesystemError(SandboxException):
    """A filesystem operation inside the sandbox failed."""


class ProcessError(SandboxException):
    """Starting or managing a process inside the sandbox failed."""


class TerminalError(SandboxException):
    """Starting or driving a terminal (PTY) inside the sandbox failed."""


class CodeExecutionError(SandboxException):
    """The code interpreter could not run the code (not an error raised *by* the code: that one is
    `Execution.error`)."""


class SandboxNotFoundException(NotFoundError):
    """The sandbox does not exist (any more): it was killed or reached its timeout."""


class FileNotFoundException(NotFoundError, FilesystemError):
    """The file or directory does not exist."""


class CommandExitException(ProcessError):
    """A command (run in the foreground, or waited for) exited with a non-zero code."""

    def __init__(self, stdout: str, stderr: str, exit_code: int, error: Optional[str]) -> None:
        super().__init__(f"Command exited with code {exit_code} and error:\n{stderr}")
        self.stdout = stdout
        """Everything the command wrote to stdout."""
        self.stderr = stderr
        """Everything the command wrote to stderr."""
        self.exit_code = exit_code
        """The command's exit code."""
        self.error = error
        """The agent's description of how the command ended, if any."""


# The official SDK's names for the same errors.
AuthenticationException = AuthenticationError
NotFoundException = NotFoundError
InvalidArgumentError = InvalidArgumentException

_combined: dict[tuple[type[SandboxException], type[SandboxException]], type[SandboxException]] = {}


def in_domain(kind: type[SandboxException], domain: Optional[type[SandboxException]]) -> type[SandboxException]:
    """The exception class that is both `kind` (what went wrong) and `domain` (where: files,
    processes, terminals, code), so callers may catch either."""
    if domain is None or issubclass(kind, domain):
        return kind
    if issubclass(domain, kind):
        return domain
    if kind is NotFoundError and domain is FilesystemError:
        return FileNotFoundException
    key = (kind, domain)
    if key not in _combined:
        _combined[key] = type(kind.__name__, (kind, domain), {"__module__": __name__, "__doc__": kind.__doc__})
    return _combined[key]


__all__ = [
    "APIError",
    "AuthenticationError",
    "AuthenticationException",
    "CodeExecutionError",
    "CommandExitException",
    "E2BException",
    "FileNotFoundException",
    "FilesystemError",
    "InvalidArgumentError",
    "InvalidArgumentException",
    "NotEnoughSpaceException",
    "NotFoundError",
    "NotFoundException",
    "ProcessError",
    "RateLimitException",
    "SandboxException",
    "SandboxNotFoundException",
    "TerminalError",
    "TimeoutException",
]
