"""Methods that work on an instance and on the class: `sbx.kill()` and `Sandbox.kill(sandbox_id)`."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional


class hybridmethod:  # noqa: N801 - used like `classmethod`
    """A method whose class-level form takes the sandbox id as its first argument."""

    def __init__(self, on_class: Callable[..., Any], on_instance: Callable[..., Any]) -> None:
        self._on_class = on_class
        self._on_instance = on_instance
        self.__doc__ = on_instance.__doc__
        self.__name__ = on_instance.__name__

    def __get__(self, obj: Optional[object], owner: Optional[type] = None) -> Callable[..., Any]:
        if obj is None:
            return functools.partial(self._on_class, owner)
        return functools.partial(self._on_instance, obj)
