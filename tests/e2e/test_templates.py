"""Custom templates, built with the official SDK's `Template` builder against hutch.

The build steps use no network: sandboxes here reach no package index, and the packages
the steps "install" are the ones the parent template has already.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2b import BuildException, Sandbox, Template
from e2b.exceptions import SandboxException

from ci_helpers import code_sandbox
from conftest import API_URL, DATA_DIR, diff_resources, host_resources, restart_server_hard

KEY = os.environ["E2B_API_KEY"]


def api(method: str, path: str, body: object | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{API_URL}{path}",
        data=data,
        method=method,
        headers={"X-API-Key": KEY, "Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Template names a test builds; deleted afterwards whatever happened."""
    made: list[str] = []
    yield made
    for name in reversed(made):
        api("DELETE", f"/templates/{name}")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_text("hello from the build context\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "helper.py").write_text("def answer():\n    return 42\n")
    (tmp_path / "pkg" / ".hidden").write_text("dotfile\n")
    return tmp_path


def test_a_template_built_with_the_sdk_carries_its_files_env_workdir_and_packages(
    context: Path, names: list[str]
) -> None:
    name = unique("sdk-built")
    names.append(name)
    logs: list[str] = []
    template = (
        Template(file_context_path=str(context))
        .from_template("code-interpreter-v1")
        .set_envs({"GREETING": "hello there", "MODE": "custom"})
        .run_cmd("pip install pandas numpy")  # already there: no network needed
        .copy("hello.txt", "/app/")
        .copy("pkg", "/app/pkg", mode=0o750)
        .run_cmd("mkdir -p /opt/tool && echo 42 > /opt/tool/answer && whoami > /opt/tool/built-by", user="root")
        .run_cmd('echo "$GREETING" > ~/greeting')
        .set_workdir("/app")
    )
    info = Template.build(template, name, on_build_logs=lambda e: logs.append(e.message))
    assert info.name == name
    assert any("[1/" in line and "ENV" in line for line in logs), logs
    assert any("Requirement already satisfied" in line for line in logs), logs
    assert Template.exists(name)

    with Sandbox.create(template=name) as sbx:
        assert sbx.get_info().name == name
        r = sbx.commands.run(
            "pwd; whoami; cat /app/hello.txt /opt/tool/answer /opt/tool/built-by ~/greeting; echo $GREETING $MODE"
        )
        assert r.stdout.splitlines() == [
            "/app",
            "user",
            "hello from the build context",
            "42",
            "root",
            "hello there",
            "hello there custom",
        ]
        listing = sbx.commands.run("stat -c '%U %a %n' /app/hello.txt /app/pkg/helper.py /app/pkg/.hidden").stdout
        assert listing.splitlines() == [
            "user 644 /app/hello.txt",
            "user 750 /app/pkg/helper.py",
            "user 750 /app/pkg/.hidden",
        ]
        # Sandbox env vars still win over the template's.
    with Sandbox.create(template=name, envs={"MODE": "mine"}) as sbx:
        assert sbx.commands.run("echo $MODE").stdout.strip() == "mine"

    # The code interpreter runs in it, in the template's workdir, with its env.
    with code_sandbox(template=name) as sbx:
        ex = sbx.run_code(
            "import os, sys, pandas\nsys.path.insert(0, '/app')\nfrom pkg.helper import answer\n"
            "print(pandas.__version__.split('.')[0].isdigit(), os.getcwd(), os.environ['GREETING'], answer())"
        )
        assert ex.error is None, ex.error
        assert ex.logs.stdout == ["True /app hello there 42\n"]


def test_a_dockerfile_from_e2bs_image_builds_on_the_code_interpreter(context: Path, names: list[str]) -> None:
    name = unique("dockerfile")
    names.append(name)
    (context / "e2b.Dockerfile").write_text(
        "FROM e2bdev/code-interpreter:latest\n"
        "ENV TOOL_HOME=/opt/tool\n"
        "RUN mkdir -p $TOOL_HOME && id -un > $TOOL_HOME/built-by\n"
        "COPY hello.txt /home/user/\n"
    )
    template = Template(file_context_path=str(context)).from_dockerfile(str(context / "e2b.Dockerfile"))
    Template.build(template, name)
    with Sandbox.create(template=name) as sbx:
        r = sbx.commands.run("id -un; pwd; cat /opt/tool/built-by /home/user/hello.txt; echo $TOOL_HOME")
        # Dockerfile steps run as root in /; sandboxes get E2B's defaults back.
        assert r.stdout.splitlines() == ["user", "/home/user", "root", "hello from the build context", "/opt/tool"]


def test_the_templates_user_and_workdir_are_the_sandboxes_defaults(names: list[str]) -> None:
    name = unique("as-root")
    names.append(name)
    Template.build(Template().from_template("base").set_user("root").set_workdir("/srv/work"), name)
    with Sandbox.create(template=name) as sbx:
        assert sbx.commands.run("whoami; pwd").stdout.splitlines() == ["root", "/srv/work"]
        # Relative file paths are the default user's home, as on E2B.
        sbx.files.write("note.txt", "x")
        assert sbx.commands.run("ls /root").stdout.split() == ["note.txt"]
        # Another user can still be asked for.
        assert sbx.commands.run("whoami", user="user").stdout.strip() == "user"


def test_a_failing_step_fails_the_build_with_its_output_and_creates_nothing(names: list[str]) -> None:
    name = unique("broken")
    names.append(name)
    template = Template().from_template("base").run_cmd("echo about to fail; exit 7")
    logs: list[str] = []
    with pytest.raises(BuildException, match="exited with code 7"):
        Template.build(template, name, on_build_logs=lambda e: logs.append(e.message))
    assert "about to fail" in logs
    assert not Template.exists(name)
    with pytest.raises(Exception, match="not found"):
        Sandbox.create(template=name)


def test_images_hutch_cannot_pull_and_unknown_parents_are_refused(names: list[str]) -> None:
    name = unique("refused")
    names.append(name)
    # An image on a registry reference that is this machine's own loopback: hutch refuses
    # every image before it would dial anything, and nothing leaves the host if it ever did.
    with pytest.raises(BuildException, match="does not pull Docker images"):
        Template.build(Template().from_image("127.0.0.1:5999/hutch-test/python:3.12"), name)
    with pytest.raises(BuildException, match="not found"):
        Template.build(Template().from_template("no-such-parent"), name)
    assert not Template.exists(name)


def test_start_and_ready_commands_run_in_every_new_sandbox(names: list[str]) -> None:
    name = unique("with-start")
    names.append(name)
    template = (
        Template()
        .from_template("code-interpreter-v1")
        .set_start_cmd(
            "python3 -m http.server 8000 --directory /home/user",
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8000), 1)\"",
        )
    )
    Template.build(template, name)
    with Sandbox.create(template=name) as sbx:
        # Ready before create returns: the server answers at once.
        r = sbx.commands.run(
            "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/').status)\""
        )
        assert r.stdout.strip() == "200"


def test_templates_stack_rebuild_in_place_and_outlive_their_parent(context: Path, names: list[str]) -> None:
    parent, child = unique("parent"), unique("child")
    names += [parent, child]
    info = Template.build(
        Template().from_template("base").run_cmd("echo v1 > /opt/parent-version", user="root"), parent
    )
    Template.build(
        Template()
        .from_template(parent)
        .run_cmd("cat /opt/parent-version > /opt/child-saw && rm /opt/parent-version", user="root"),
        child,
    )
    with Sandbox.create(template=child) as sbx:
        assert sbx.commands.run("cat /opt/child-saw").stdout.strip() == "v1"
        # The child's layer deleted the parent's file: a whiteout, kept across layers.
        r = sbx.commands.run("test -e /opt/parent-version && echo present || echo gone")
        assert r.stdout.strip() == "gone"

    with Sandbox.create(template=parent) as old:
        # A rebuild keeps the id, and sandboxes already running keep their files.
        again = Template.build(
            Template().from_template("base").run_cmd("echo v2 > /opt/parent-version", user="root"), parent
        )
        assert again.template_id == info.template_id
        assert old.commands.run("cat /opt/parent-version").stdout.strip() == "v1"
        with Sandbox.create(template=parent) as new:
            assert new.commands.run("cat /opt/parent-version").stdout.strip() == "v2"

    # Deleting the parent leaves the child whole.
    status, _ = api("DELETE", f"/templates/{parent}")
    assert status == 204
    assert not Template.exists(parent)
    with Sandbox.create(template=child) as sbx:
        assert sbx.commands.run("cat /opt/child-saw").stdout.strip() == "v1"


def test_template_api_errors_are_e2b_shaped_and_change_nothing() -> None:
    status, body = api("POST", "/v3/templates", {"name": "Bad Name!"})
    assert status == 400 and "invalid template name" in body["message"]
    status, body = api("POST", "/v3/templates", {"name": "base"})
    assert status == 400 and "built-in" in body["message"]
    status, body = api("GET", "/templates/nope/builds/nope/status")
    assert status == 404
    status, body = api("DELETE", "/templates/code-interpreter-v1")
    assert status == 400
    status, body = api("DELETE", "/templates/no-such-template")
    assert status == 404

    name = unique("errors")
    status, created = api("POST", "/v3/templates", {"name": name})
    assert status == 202
    tid, bid = created["templateID"], created["buildID"]
    status, body = api("GET", f"/templates/{tid}/files/..%2Fetc")
    assert status == 400
    status, link = api("GET", f"/templates/{tid}/files/{'ab' * 32}")
    assert status == 201 and link["present"] is False
    # An upload without the build's token is refused.
    bad = urllib.request.Request(link["url"].split("?")[0] + "?token=wrong", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 401
    # A COPY whose files were never uploaded, and an unknown step type.
    status, body = api(
        "POST",
        f"/v2/templates/{tid}/builds/{bid}",
        {"fromTemplate": "base", "steps": [{"type": "COPY", "args": ["a", "/b"], "filesHash": "ab" * 32}]},
    )
    assert status == 400 and "not uploaded" in body["message"]
    status, body = api("POST", f"/v2/templates/{tid}/builds/{bid}", {"steps": [{"type": "FLY", "args": []}]})
    assert status == 400 and "unknown step type" in body["message"]
    status, st = api("GET", f"/templates/{tid}/builds/{bid}/status")
    assert status == 200 and st["status"] == "waiting"
    assert not Template.exists(name)


@pytest.mark.usefixtures("pools_off")
def test_templates_survive_a_restart_and_an_interrupted_build_leaves_nothing(names: list[str]) -> None:
    name = unique("durable")
    names.append(name)
    Template.build(Template().from_template("base").run_cmd("echo kept > /opt/kept", user="root"), name)
    sbx = Sandbox.create(template=name)
    try:
        slow = unique("interrupted")
        names.append(slow)
        before = host_resources()
        build = Template.build_in_background(Template().from_template("base").run_cmd("sleep 600"), slow)
        deadline = time.time() + 60
        while time.time() < deadline:
            st = Template.get_build_status(build, logs_offset=0)
            if any("RUN sleep 600" in e.message for e in st.log_entries):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the slow build never reached its RUN step")
        stray = DATA_DIR / "templates" / "layers" / "leftover" / "half-copied"
        stray.mkdir(parents=True)

        restart_server_hard()

        # The build sandbox is gone with the build; the built template and its sandbox stay.
        assert not Template.exists(slow)
        assert [s.sandbox_id for s in Sandbox.list(query=None).next_items() if s.metadata.get("hutch.build")] == []
        assert not stray.exists() and not stray.parent.exists()
        assert sbx.commands.run("cat /opt/kept").stdout.strip() == "kept"
        with Sandbox.create(template=name) as again:
            assert again.commands.run("cat /opt/kept").stdout.strip() == "kept"
        after = host_resources()
        diff = diff_resources(before, after)
        assert not diff, diff
    finally:
        sbx.kill()
    # Deleting the template removes its layer from disk once nothing uses it.
    status, _ = api("DELETE", f"/templates/{name}")
    assert status == 204
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create(template=name)
    layers = DATA_DIR / "templates" / "layers"
    left = list(layers.glob("*/*")) if layers.exists() else []
    owners = {p.parent.name for p in left}
    status, listed = api("GET", "/templates")
    known = {t["templateID"] for t in listed}
    assert owners <= known, (owners, known)
    shutil.rmtree(DATA_DIR / "templates" / "layers" / "leftover", ignore_errors=True)
