"""hutch: run untrusted code in stateful, isolated sandboxes (an E2B-compatible Python SDK).

    from hutch import Sandbox

    with Sandbox() as sandbox:
        sandbox.run_code("x = 1")
        print(sandbox.run_code("x += 1; x").text)  # 2

`Sandbox` (blocking) and `AsyncSandbox` (asyncio) are the entry points; see their docs, and
the README, for the server address and API key settings.
"""

from ._config import ConnectionConfig
from .api import SandboxInfo, SandboxMetrics, SandboxQuery
from .charts import (
    BarChart,
    BarData,
    BoxAndWhiskerChart,
    BoxAndWhiskerData,
    Chart,
    Chart2D,
    ChartType,
    LineChart,
    PieChart,
    PieData,
    PointChart,
    PointData,
    ScaleType,
    ScatterChart,
    SuperChart,
)
from .code import Notebook
from .code_async import AsyncNotebook
from .commands import CommandHandle, Commands, Process, ProcessHandle
from .commands_async import AsyncCommandHandle, AsyncCommands, AsyncProcess, AsyncProcessHandle
from .exceptions import (
    APIError,
    AuthenticationError,
    AuthenticationException,
    CodeExecutionError,
    CommandExitException,
    E2BException,
    FileNotFoundException,
    FilesystemError,
    InvalidArgumentError,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundError,
    NotFoundException,
    ProcessError,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    TerminalError,
    TimeoutException,
)
from .filesystem import Filesystem, WatchHandle
from .filesystem_async import AsyncFilesystem, AsyncWatchHandle
from .filesystem_models import EntryInfo, FileInfo, FilesystemEvent, FilesystemEventType, FileType, WriteInfo
from .models import Context, Execution, ExecutionError, Logs, MIMEType, OutputMessage, Result
from .process_models import CommandResult, ProcessExecution, ProcessInfo, PtySize
from .pty import Pty, PtyHandle, Terminal
from .pty_async import AsyncPty, AsyncPtyHandle, AsyncTerminal
from .sandbox import CodeInterpreter, Sandbox, SandboxPaginator
from .sandbox_async import AsyncCodeInterpreter, AsyncSandbox, AsyncSandboxPaginator

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncCodeInterpreter",
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncFilesystem",
    "AsyncNotebook",
    "AsyncProcess",
    "AsyncProcessHandle",
    "AsyncPty",
    "AsyncPtyHandle",
    "AsyncSandbox",
    "AsyncSandboxPaginator",
    "AsyncTerminal",
    "AsyncWatchHandle",
    "AuthenticationError",
    "AuthenticationException",
    "BarChart",
    "BarData",
    "BoxAndWhiskerChart",
    "BoxAndWhiskerData",
    "Chart",
    "Chart2D",
    "ChartType",
    "CodeExecutionError",
    "CodeInterpreter",
    "CommandExitException",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "ConnectionConfig",
    "Context",
    "E2BException",
    "EntryInfo",
    "Execution",
    "ExecutionError",
    "FileInfo",
    "FileNotFoundException",
    "FileType",
    "Filesystem",
    "FilesystemError",
    "FilesystemEvent",
    "FilesystemEventType",
    "InvalidArgumentError",
    "InvalidArgumentException",
    "LineChart",
    "Logs",
    "MIMEType",
    "NotEnoughSpaceException",
    "NotFoundError",
    "NotFoundException",
    "Notebook",
    "OutputMessage",
    "PieChart",
    "PieData",
    "PointChart",
    "PointData",
    "Process",
    "ProcessError",
    "ProcessExecution",
    "ProcessHandle",
    "ProcessInfo",
    "Pty",
    "PtyHandle",
    "PtySize",
    "RateLimitException",
    "Result",
    "Sandbox",
    "SandboxException",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxNotFoundException",
    "SandboxPaginator",
    "SandboxQuery",
    "ScaleType",
    "ScatterChart",
    "SuperChart",
    "Terminal",
    "TerminalError",
    "TimeoutException",
    "WatchHandle",
    "WriteInfo",
    "__version__",
]
