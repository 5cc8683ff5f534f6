"""Models that read both as attributes and as dicts (`log.line` and `log["line"]`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class DictLike:
    """Mixin: `obj["name"]`, `obj.get("name")`, `"name" in obj` and `dict(obj)` read the public
    attributes (and properties) named in `_fields`."""

    _fields: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self._fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when it is not a field or is None."""
        if key not in self._fields:
            return default
        value = getattr(self, key)
        return default if value is None else value

    def keys(self) -> list[str]:
        """The field names."""
        return list(self._fields)

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return {name: getattr(self, name) for name in self._fields}
