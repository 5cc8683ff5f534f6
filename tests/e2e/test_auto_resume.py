"""`lifecycle={"on_timeout": "pause", "auto_resume": True}`: a paused sandbox wakes when
traffic that holds its credentials reaches it through the router, and the request succeeds;
one without `auto_resume` stays paused."""

from __future__ import annotations

import os
import uuid

from e2b import Sandbox, SandboxState

from sdk_helpers import SANDBOX_URL, plain_client, wait_for_port_cmd

API_URL = os.environ["E2B_API_URL"]


def test_traffic_wakes_a_paused_sandbox_created_with_auto_resume() -> None:
    sbx = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        info = Sandbox.get_info(sbx.sandbox_id)
        assert info.lifecycle is not None and info.lifecycle["auto_resume"] is True
        assert info.lifecycle["on_timeout"] == "pause"
        marker = uuid.uuid4().hex
        sbx.commands.run(f"mkdir -p /tmp/www && echo {marker} > /tmp/www/hello.txt")
        sbx.commands.run("python3 -m http.server 8000 --bind 0.0.0.0", background=True, cwd="/tmp/www")
        sbx.commands.run(wait_for_port_cmd(8000))
        sbx.pause()
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        # A request to a port of it: the sandbox resumes (memory kept, so the server is
        # still there) and answers.
        with plain_client() as c:
            r = c.get(
                f"{SANDBOX_URL}/hello.txt", headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
            )
        assert r.status_code == 200 and r.text == f"{marker}\n"
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.RUNNING
        # Paused again, the SDK's own call to the agent wakes it too.
        sbx.pause()
        assert sbx.commands.run("echo awake").stdout.strip() == "awake"
    finally:
        sbx.kill()


def test_a_paused_sandbox_without_auto_resume_stays_paused(sandbox: Sandbox) -> None:
    sandbox.pause()
    with plain_client() as c:
        r = c.get(f"{SANDBOX_URL}/", headers={"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000"})
    assert r.status_code == 502
    assert Sandbox.get_info(sandbox.sandbox_id).state == SandboxState.PAUSED


def test_traffic_without_the_agents_token_does_not_wake_it() -> None:
    sbx = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        sbx.pause()
        with plain_client() as c:
            r = c.get(f"{SANDBOX_URL}/health", headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
        assert r.status_code == 502
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
    finally:
        sbx.kill()
