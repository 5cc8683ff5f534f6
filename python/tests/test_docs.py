"""Every public name of the SDK has a docstring: the API reference is generated from them."""

from __future__ import annotations

import inspect
from typing import Any

import hutch


def _public_members(obj: Any) -> list[tuple[str, Any]]:
    members = []
    for name, value in vars(obj).items():
        if name.startswith("_"):
            continue
        members.append((name, value))
    return members


def test_every_exported_name_and_its_public_members_are_documented() -> None:
    missing: list[str] = []
    for name in hutch.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(hutch, name)
        if not inspect.isclass(obj) and not inspect.isfunction(obj):
            continue  # type aliases and constants
        if not inspect.getdoc(obj):
            missing.append(name)
        if not inspect.isclass(obj) or issubclass(obj, BaseException):
            continue
        for member_name, member in _public_members(obj):
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                doc = member.__doc__ or (member.fget.__doc__ if member.fget else None)
            elif callable(member):
                doc = member.__doc__
            else:
                continue  # attributes are documented where the class lists them
            if not doc:
                missing.append(f"{name}.{member_name}")
    assert not missing, f"public names without a docstring: {missing}"
