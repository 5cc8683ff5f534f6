"""Warm pools: a create takes a sandbox that was started (and its Python kernel warmed)
before anyone asked, and the official SDKs cannot tell it from one started cold.

Pool sizes are hutch's own API (`GET`/`PUT /pools/{template}`); each test sets what it
needs and puts the sizes back afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2b import Sandbox, SandboxQuery

from ci_helpers import CodeSandbox, code_sandbox
from conftest import cgroup_dirs, pools_api, restart_server_hard, set_pools
from sdk_helpers import envd_get, envd_unary, wait_until
from test_network import FakeHost, curl

TEMPLATE = "code-interpreter-v1"

# Run inside the sandbox's kernel: when the kernel process started (seconds since the epoch).
KERNEL_STARTED = """
import os
with open('/proc/self/stat') as f:
    start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
with open('/proc/uptime') as f:
    uptime = float(f.read().split()[0])
import time as _t
_t.time() - uptime + start_ticks / os.sysconf('SC_CLK_TCK')
"""


@pytest.fixture
def restore_pools() -> Iterator[None]:
    _, pools = pools_api("GET")
    assert isinstance(pools, list)
    saved = {p["templateID"]: (p["min"], p["max"]) for p in pools}
    try:
        yield
    finally:
        set_pools(saved)


def wait_ready(template: str, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while True:
        status, pool = pools_api("GET", f"/{template}")
        assert status == 200, pool
        assert isinstance(pool, dict)
        if pool["ready"] >= n:
            return
        assert time.time() < deadline, f"the pool never held {n}: {pool}"
        time.sleep(0.2)


def observe(sbx: CodeSandbox, tag: str) -> dict[str, Any]:
    """What a user of the official SDKs sees of a new sandbox, with its id replaced by ID."""
    sid = sbx.sandbox_id
    first = sbx.run_code("1 + 1")
    info = sbx.get_info()
    listed = Sandbox.list(query=SandboxQuery(metadata={"pool-test": tag})).next_items()
    cmd = sbx.commands.run('hostname; whoami; pwd; echo $POOL_VAR; grep -c "$(hostname)" /etc/hosts')
    ctx = sbx.create_code_context()
    return {
        "first_result": first.text,
        "execution_count": first.execution_count,
        "kernel_env": sbx.run_code("import os; os.environ.get('POOL_VAR')").text,
        "kernel_subprocess_env": sbx.run_code(
            "import subprocess; subprocess.check_output(['sh', '-c', 'echo $POOL_VAR']).decode().strip()"
        ).text,
        "new_context_env": sbx.run_code("import os; os.environ.get('POOL_VAR')", context=ctx).text,
        "cwd": sbx.run_code("import os; os.getcwd()").text,
        "command": cmd.stdout.replace(sid, "ID").split(),
        "envs_endpoint": envd_get(sbx, "/envs").json().get("POOL_VAR"),
        "metadata": info.metadata,
        "template": info.template_id,
        "lifetime_s": round((info.end_at - info.started_at).total_seconds()),
        "listed": [s.sandbox_id.replace(sid, "ID") for s in listed],
        "no_token_refused": envd_unary(sbx, "process.Process/List", with_token=False).status_code,
        "files": sbx.files.exists("/home/user"),
    }


def create_and_observe(pooled: bool) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    asked = time.time()
    with code_sandbox(envs={"POOL_VAR": f"v-{tag}"}, metadata={"pool-test": tag}, timeout=321, secure=True) as sbx:
        seen = observe(sbx, tag)
        kernel_started = float(sbx.run_code(KERNEL_STARTED).text or "nan")
        sbx.kill()
    # The one thing that differs: a pooled sandbox's kernel ran before the create was sent.
    assert (kernel_started < asked) is pooled, (kernel_started, asked)
    seen["kernel_env"] = seen["kernel_env"].replace(tag, "TAG")
    seen["kernel_subprocess_env"] = seen["kernel_subprocess_env"].replace(tag, "TAG")
    seen["new_context_env"] = seen["new_context_env"].replace(tag, "TAG")
    seen["command"] = [c.replace(tag, "TAG") for c in seen["command"]]
    seen["envs_endpoint"] = seen["envs_endpoint"].replace(tag, "TAG")
    seen["metadata"] = {k: v.replace(tag, "TAG") for k, v in seen["metadata"].items()}
    return seen


@pytest.mark.usefixtures("restore_pools")
def test_a_pooled_sandbox_is_indistinguishable_from_a_cold_one() -> None:
    set_pools({TEMPLATE: (0, 0)})
    cold = create_and_observe(pooled=False)
    set_pools({TEMPLATE: (1, 1)})
    wait_ready(TEMPLATE, 1)
    pooled = create_and_observe(pooled=True)
    assert pooled == cold
    assert cold["kernel_env"] == "v-TAG"
    assert cold["command"] == ["ID", "user", "/home/user", "v-TAG", "1"]
    assert cold["listed"] == ["ID"]
    assert cold["no_token_refused"] == 401
    assert cold["execution_count"] == 1


@pytest.mark.usefixtures("restore_pools")
def test_waiting_sandboxes_are_listed_nowhere_and_refilled_after_a_claim() -> None:
    set_pools({TEMPLATE: (2, 2)})
    wait_ready(TEMPLATE, 2)
    _, pool = pools_api("GET", f"/{TEMPLATE}")
    assert isinstance(pool, dict)
    assert (pool["min"], pool["max"], pool["target"]) == (2, 2, 2)
    ids_before = {s.sandbox_id for s in Sandbox.list().next_items()}
    with code_sandbox() as sbx:
        assert sbx.run_code("6 * 7").text == "42"
        listed = {s.sandbox_id for s in Sandbox.list().next_items()}
        assert listed - ids_before == {sbx.sandbox_id}
        wait_ready(TEMPLATE, 2)


@pytest.mark.usefixtures("restore_pools")
def test_a_pooled_sandbox_created_without_internet_has_none() -> None:
    set_pools({"base": (1, 1)})
    wait_ready("base", 1)
    with FakeHost("198.18") as host:
        closed = Sandbox.create(allow_internet_access=False, timeout=120)
        try:
            rc, body = curl(closed, f"http://{host.ip}:8080/")
            assert rc != 0 and "fake internet" not in body
            assert closed.get_info().allow_internet_access is False
        finally:
            closed.kill()
        wait_ready("base", 1)
        open_sbx = Sandbox.create(timeout=120)
        try:
            rc, body = curl(open_sbx, f"http://{host.ip}:8080/")
            assert rc == 0 and body == "hello from the fake internet"
        finally:
            open_sbx.kill()


def test_pool_api_reports_sizes_and_refuses_bad_input() -> None:
    status, pools = pools_api("GET")
    assert status == 200 and isinstance(pools, list)
    names = {p["name"] for p in pools}
    assert TEMPLATE in names
    for p in pools:
        assert set(p) == {
            "templateID",
            "name",
            "min",
            "max",
            "target",
            "ready",
            "starting",
            "stopping",
            "demand",
            "zygote",
        }
    status, body = pools_api("PUT", "/no-such-template", {"size": 1})
    assert status == 404 and isinstance(body, dict) and body["code"] == 404
    status, body = pools_api("PUT", f"/{TEMPLATE}", {"min": 3, "max": 1})
    assert status == 400 and isinstance(body, dict) and "larger than its max" in body["message"]
    status, body = pools_api("PUT", f"/{TEMPLATE}", {"size": 1, "min": 1})
    assert status == 400
    status, body = pools_api("PUT", f"/{TEMPLATE}", {"bogus": 1})
    assert status == 400
    status, body = pools_api("PUT", f"/{TEMPLATE}", {"size": 100000})
    assert status == 400
    # Nothing changed.
    _, after = pools_api("GET")
    assert isinstance(after, list)
    assert {(p["name"], p["min"], p["max"]) for p in after} == {(p["name"], p["min"], p["max"]) for p in pools}


@pytest.mark.usefixtures("restore_pools")
def test_a_hard_restart_removes_the_sandboxes_that_were_waiting() -> None:
    set_pools({"base": (1, 1)})
    wait_ready("base", 1)
    listed = {s.sandbox_id for s in Sandbox.list().next_items()}
    waiting = {os.path.basename(d) for d in cgroup_dirs()} - listed
    assert waiting, "a pooled sandbox holds cgroups on the host"
    restart_server_hard()
    assert wait_until(lambda: not waiting & {os.path.basename(d) for d in cgroup_dirs()}, timeout=30)
    # The pool fills again with new sandboxes.
    wait_ready("base", 1)
