"""API keys managed over the API (E2B's `/api-keys` and `/admin/teams/{teamID}/api-keys`):
an admin key lists, creates, renames and revokes its team's keys, or another team's; an
ordinary key can do none of it and changes nothing; a revoked key is refused at once; the
list never shows a key, only its mask.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conftest import api, hutch, key_id


@dataclass
class Team:
    name: str
    admin: str
    plain: str


@contextlib.contextmanager
def new_team(tag: str) -> Iterator[Team]:
    """A team with an admin and a plain key; afterwards every key of it is revoked (those
    made over the API too)."""
    name = f"keys-{tag}-{secrets.token_hex(3)}"
    hutch("teams", "create", name)

    def key(label: str, *extra: str) -> str:
        return hutch("keys", "create", "--name", label, "--team", name, *extra).strip().splitlines()[-1]

    team = Team(name=name, admin=key("admin", "--admin"), plain=key("plain"))
    try:
        yield team
    finally:
        status, keys = api(team.admin, "GET", "/api-keys")
        for k in keys if status == 200 and isinstance(keys, list) else []:
            if k["id"] != key_id(team.admin):
                api(team.admin, "DELETE", f"/api-keys/{k['id']}")
        with contextlib.suppress(subprocess.CalledProcessError):
            hutch("keys", "revoke", team.admin)


@pytest.fixture
def a() -> Iterator[Team]:
    with new_team("a") as team:
        yield team


@pytest.fixture
def b() -> Iterator[Team]:
    with new_team("b") as team:
        yield team


def listed(admin: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    status, keys = api(admin, "GET", "/api-keys", headers=headers)
    assert status == 200 and isinstance(keys, list), (status, keys)
    return {str(k["id"]): k for k in keys}


def test_an_admin_key_creates_renames_and_revokes_its_teams_keys(a: Team) -> None:
    keys = listed(a.admin)
    assert set(keys) == {key_id(a.admin), key_id(a.plain)}
    text = json.dumps(keys)
    assert a.admin not in text and a.plain not in text and a.plain[4:20] not in text
    mask = keys[key_id(a.plain)]["mask"]
    assert mask == {
        "prefix": "e2b_",
        "valueLength": 40,
        "maskedValuePrefix": a.plain[4:8],
        "maskedValueSuffix": a.plain[-4:],
    }
    assert keys[key_id(a.plain)]["name"] == "plain"

    status, made = api(a.admin, "POST", "/api-keys", {"name": "ci pipeline"})
    assert status == 201 and isinstance(made, dict), (status, made)
    new = str(made["key"])
    assert new.startswith("e2b_") and len(new) == 44 and made["id"] == key_id(new), made
    assert made["name"] == "ci pipeline" and made["createdAt"]
    # The new key works, and acts for the team: its sandbox is the team's.
    status, sbx = api(new, "POST", "/sandboxes", {"templateID": "base", "timeout": 120})
    assert status == 201 and isinstance(sbx, dict), (status, sbx)
    try:
        status, got = api(a.plain, "GET", f"/sandboxes/{sbx['sandboxID']}")
        assert status == 200, (status, got)
    finally:
        api(new, "DELETE", f"/sandboxes/{sbx['sandboxID']}")
    # Listed (never with its value), renamed, revoked.
    assert "key" not in listed(a.admin)[key_id(new)]
    assert api(a.admin, "PATCH", f"/api-keys/{key_id(new)}", {"name": "renamed"})[0] == 200
    assert listed(a.admin)[key_id(new)]["name"] == "renamed"
    assert api(a.admin, "DELETE", f"/api-keys/{key_id(new)}")[0] == 204
    status, err = api(new, "GET", "/v2/sandboxes")
    assert status == 401 and isinstance(err, dict) and err["code"] == 401, (status, err)
    assert key_id(new) not in listed(a.admin)
    assert api(a.admin, "DELETE", f"/api-keys/{key_id(new)}")[0] == 404
    assert api(a.admin, "PATCH", f"/api-keys/{key_id(new)}", {"name": "x"})[0] == 404


def test_ordinary_keys_cannot_manage_keys_and_change_nothing(a: Team) -> None:
    before = listed(a.admin)
    for method, path, body in [
        ("GET", "/api-keys", None),
        ("POST", "/api-keys", {"name": "mine"}),
        ("PATCH", f"/api-keys/{key_id(a.admin)}", {"name": "taken"}),
        ("DELETE", f"/api-keys/{key_id(a.admin)}", None),
        ("POST", f"/admin/teams/{a.name}/api-keys", {"name": "mine"}),
        ("DELETE", f"/admin/teams/{a.name}/api-keys/{key_id(a.admin)}", None),
    ]:
        status, err = api(a.plain, method, path, body)
        assert status == 403 and isinstance(err, dict) and err["code"] == 403, (method, path, status, err)
        assert "admin" in str(err["message"])
    assert listed(a.admin) == before
    assert api(a.admin, "GET", "/v2/sandboxes")[0] == 200


def test_bad_names_and_unknown_teams_or_keys_are_refused(a: Team) -> None:
    before = listed(a.admin)
    for body in [None, {}, {"name": ""}, {"name": "a\nb"}, {"name": "x" * 257}, {"name": 5}]:
        status, err = api(a.admin, "POST", "/api-keys", body)
        assert status == 400 and isinstance(err, dict) and err["code"] == 400, (body, status, err)
    status, err = api(a.admin, "GET", "/api-keys", headers={"X-Team-ID": "no-such-team"})
    assert status == 404 and isinstance(err, dict) and "team" in str(err["message"]), (status, err)
    assert api(a.admin, "POST", "/admin/teams/no-such-team/api-keys", {"name": "x"})[0] == 404
    assert api(a.admin, "DELETE", "/api-keys/000000000000")[0] == 404
    assert listed(a.admin) == before


def test_an_admin_key_manages_another_teams_keys_only_when_it_names_that_team(a: Team, b: Team) -> None:
    # b's admin names team a by header or in the path; without it, it acts on its own team.
    assert set(listed(b.admin, headers={"X-Team-ID": a.name})) == set(listed(a.admin))
    assert api(b.admin, "DELETE", f"/api-keys/{key_id(a.plain)}")[0] == 404
    assert api(b.admin, "PATCH", f"/api-keys/{key_id(a.plain)}", {"name": "x"})[0] == 404
    status, made = api(b.admin, "POST", f"/admin/teams/{a.name}/api-keys", {"name": "from b"})
    assert status == 201 and isinstance(made, dict), (status, made)
    assert str(made["id"]) in listed(a.admin)
    assert str(made["id"]) not in listed(b.admin)
    assert api(b.admin, "DELETE", f"/admin/teams/{b.name}/api-keys/{made['id']}")[0] == 404
    assert api(b.admin, "DELETE", f"/admin/teams/{a.name}/api-keys/{made['id']}")[0] == 204
    assert api(str(made["key"]), "GET", "/v2/sandboxes")[0] == 401
    assert api(a.plain, "GET", "/v2/sandboxes")[0] == 200
