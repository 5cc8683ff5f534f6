"""Tenancy: one team's keys cannot see, reach or change another team's sandboxes, templates,
builds or build files; an admin key sees everything; a team's limits cap its templates.

The teams and keys are made with the `hutch teams` / `hutch keys` CLI against the test
server's data directory (the running server reads them at once), and every attack goes
through the official `e2b` SDK or E2B's HTTP API as the other team's client would.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2b import NotFoundException, RateLimitException, Sandbox, SandboxException, Template

from conftest import API_URL, api, hutch


def put(url: str, data: bytes) -> int:
    req = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@dataclass
class Teams:
    a: str
    b: str
    admin_b: str
    small: str
    small_other: str


@pytest.fixture(scope="module")
def teams() -> Iterator[Teams]:
    suffix = secrets.token_hex(3)
    keys: list[str] = []

    def key(team: str, *extra: str) -> str:
        k = hutch("keys", "create", "--name", f"tenancy-{team}", "--team", team, *extra).strip()
        keys.append(k)
        return k

    hutch("teams", "create", f"sec-a-{suffix}")
    hutch("teams", "create", f"sec-b-{suffix}")
    hutch(
        "teams",
        "create",
        f"sec-small-{suffix}",
        "--max-cpu",
        "1",
        "--max-memory-mb",
        "512",
        "--max-sandboxes",
        "1",
    )
    try:
        yield Teams(
            a=key(f"sec-a-{suffix}"),
            b=key(f"sec-b-{suffix}"),
            admin_b=key(f"sec-b-{suffix}", "--admin"),
            small=key(f"sec-small-{suffix}"),
            small_other=key(f"sec-small-{suffix}"),
        )
    finally:
        for k in keys:
            with contextlib.suppress(subprocess.CalledProcessError):
                hutch("keys", "revoke", k)


def test_another_teams_sandbox_answers_404_everywhere_and_keeps_running(teams: Teams) -> None:
    sbx = Sandbox.create(template="base", api_key=teams.a, timeout=120)
    try:
        sid = sbx.sandbox_id
        # Every control-plane call on it, by the other team, finds nothing.
        for method, path, body in [
            ("GET", f"/sandboxes/{sid}", None),
            ("POST", f"/sandboxes/{sid}/connect", {"timeout": 60}),
            ("POST", f"/v2/sandboxes/{sid}/connect", {"timeout": 60}),
            ("POST", f"/sandboxes/{sid}/timeout", {"timeout": 1}),
            ("POST", f"/sandboxes/{sid}/refreshes", {"duration": 1}),
            ("POST", f"/sandboxes/{sid}/pause", None),
            ("POST", f"/sandboxes/{sid}/resume", {"timeout": 60}),
            ("GET", f"/sandboxes/{sid}/metrics", None),
            ("DELETE", f"/sandboxes/{sid}", None),
        ]:
            status, answer = api(teams.b, method, path, body)
            assert status == 404, (method, path, status, answer)
            assert "envdAccessToken" not in json.dumps(answer)
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sid, api_key=teams.b)
        with pytest.raises(NotFoundException):
            Sandbox.connect(sid, api_key=teams.b)
        assert Sandbox.kill(sid, api_key=teams.b) is False
        listed_b = [s.sandbox_id for s in Sandbox.list(api_key=teams.b).next_items()]
        assert sid not in listed_b
        # Its own team, and an admin key of any team, see it.
        assert sid in [s.sandbox_id for s in Sandbox.list(api_key=teams.a).next_items()]
        assert sid in [s.sandbox_id for s in Sandbox.list(api_key=teams.admin_b).next_items()]
        assert Sandbox.get_info(sid, api_key=teams.admin_b).sandbox_id == sid
        # None of the other team's calls touched it.
        assert sbx.is_running()
        assert sbx.commands.run("echo alive").stdout.strip() == "alive"
    finally:
        sbx.kill()


def test_another_teams_template_and_builds_cannot_be_seen_used_rebuilt_or_deleted(teams: Teams) -> None:
    name = f"sec-tpl-{secrets.token_hex(3)}"
    Template.build(
        Template().from_template("base").run_cmd("echo team-a > /home/user/owner"),
        name,
        api_key=teams.a,
    )
    try:
        status, info = api(teams.a, "GET", f"/templates/{name}")
        assert status == 200, info
        assert isinstance(info, dict)
        tid = info["templateID"]
        # The other team cannot start it, see it, or delete it, by name or id.
        with pytest.raises(SandboxException, match=f"404: template '{name}' not found"):
            Sandbox.create(template=name, api_key=teams.b)
        assert not Template.exists(name, api_key=teams.b)
        for ref in (name, tid):
            assert api(teams.b, "GET", f"/templates/{ref}")[0] == 404
            assert api(teams.b, "DELETE", f"/templates/{ref}")[0] == 404
        status, listed = api(teams.b, "GET", "/templates")
        assert status == 200 and tid not in json.dumps(listed)

        # A build of the same name by the other team is another template, not a rebuild.
        status, theirs = api(teams.b, "POST", "/v3/templates", {"name": name})
        assert status == 202 and isinstance(theirs, dict)
        assert theirs["templateID"] != tid
        # Team a's next build: its status, files and start are team a's only.
        status, mine = api(teams.a, "POST", "/v3/templates", {"name": name})
        assert status == 202 and isinstance(mine, dict) and mine["templateID"] == tid
        build = mine["buildID"]
        for method, path in [
            ("GET", f"/templates/{tid}/builds/{build}/status"),
            ("GET", f"/templates/{tid}/files/{'ab' * 32}"),
            ("POST", f"/v2/templates/{tid}/builds/{build}"),
        ]:
            status, answer = api(teams.b, method, path, {} if method == "POST" else None)
            assert status == 404, (method, path, status, answer)
        # The other team's upload token does not upload into team a's build.
        files_hash = "cd" * 32
        status, theirs_link = api(teams.b, "GET", f"/templates/{theirs['templateID']}/files/{files_hash}")
        assert status == 201 and isinstance(theirs_link, dict)
        their_token = str(theirs_link["url"]).rsplit("token=", 1)[1]
        assert put(f"{API_URL}/templates/{tid}/files/{files_hash}/upload?token={their_token}", b"evil") == 401
        # The template still works for its own team, with its own content.
        sbx = Sandbox.create(template=name, api_key=teams.a, timeout=60)
        try:
            assert sbx.files.read("/home/user/owner").strip() == "team-a"
        finally:
            sbx.kill()
    finally:
        assert api(teams.a, "DELETE", f"/templates/{name}")[0] == 204


def test_a_teams_limits_and_the_servers_cap_what_templates_may_ask_for(teams: Teams) -> None:
    status, answer = api(teams.small, "POST", "/v3/templates", {"name": "sec-big", "cpuCount": 2})
    assert status == 400 and isinstance(answer, dict)
    assert "allows 1 to 1 CPUs" in str(answer["message"])
    status, answer = api(teams.small, "POST", "/v3/templates", {"name": "sec-big", "memoryMB": 1024})
    assert status == 400 and isinstance(answer, dict)
    assert "allows 128 to 512 MiB" in str(answer["message"])
    # Past the operator's ceiling (this host's CPUs by default) for every team.
    status, answer = api(teams.a, "POST", "/v3/templates", {"name": "sec-big", "cpuCount": 4096})
    assert status == 400 and isinstance(answer, dict)
    assert "cpuCount 4096 is out of range" in str(answer["message"])
    status, _ = api(teams.small, "POST", "/v3/templates", {"name": "sec-fits", "cpuCount": 1, "memoryMB": 512})
    assert status == 202


def test_warm_pools_are_the_operators(teams: Teams) -> None:
    status, answer = api(teams.a, "GET", "/pools")
    assert status == 403 and isinstance(answer, dict)
    assert "admin key" in str(answer["message"])
    assert api(teams.a, "PUT", "/pools/base", {"min": 5, "max": 5})[0] == 403
    assert api(teams.admin_b, "GET", "/pools")[0] == 200


def test_a_sandbox_created_insecure_still_needs_its_token(teams: Teams) -> None:
    status, created = api(teams.a, "POST", "/sandboxes", {"templateID": "base", "secure": False, "timeout": 60})
    assert status == 201 and isinstance(created, dict)
    sid, token = created["sandboxID"], created["envdAccessToken"]
    try:
        assert isinstance(token, str) and len(token) == 48

        def read(extra: dict[str, str]) -> int:
            req = urllib.request.Request(
                f"{API_URL}/files?path=/etc/hostname",
                headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983", **extra},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return int(e.code)

        assert read({}) == 401
        assert read({"X-Access-Token": "0" * 48}) == 401
        assert read({"X-Access-Token": token}) == 200
    finally:
        assert api(teams.a, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_a_teams_sandbox_limit_holds_across_its_keys(teams: Teams) -> None:
    first = Sandbox.create(template="base", api_key=teams.small, timeout=60)
    try:
        with pytest.raises(RateLimitException, match=r"team sec-small-.* may hold at most 1 sandbox"):
            Sandbox.create(template="base", api_key=teams.small_other, timeout=60)
        # Other teams are not held back by it.
        other = Sandbox.create(template="base", api_key=teams.a, timeout=60)
        other.kill()
    finally:
        first.kill()
    again = Sandbox.create(template="base", api_key=teams.small_other, timeout=60)
    again.kill()
