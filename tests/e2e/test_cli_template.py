"""`hutch template build / list / delete`: templates from an e2b.Dockerfile, as
`e2b template build` makes them, then used through the official SDK."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from e2b import Sandbox, Template

from conftest import WORK


def hutch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = (WORK / "server.cmd").read_text().splitlines()[0]
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_a_dockerfile_builds_lists_runs_and_deletes(tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("A = 1\n")
    (tmp_path / "src" / "b.py").write_text("B = 2\n")
    (tmp_path / "notes.txt").write_text("not copied\n")
    (tmp_path / "e2b.Dockerfile").write_text(
        "ARG VERSION=1.0\n"
        "FROM code-interpreter-v1\n"
        "# a comment, and a continued line below\n"
        "ENV APP_HOME=/srv/app \\\n    APP_VERSION=${VERSION}\n"
        "RUN mkdir -p $APP_HOME && chown user: $APP_HOME\n"
        "COPY --chown=user:user src/*.py $APP_HOME/\n"
        "WORKDIR $APP_HOME\n"
        "USER user\n"
        'RUN echo "built $APP_VERSION as $(id -un) in $(pwd)" > build-info\n'
        "EXPOSE 8080\n"
        'CMD ["python3", "-m", "http.server", "8080"]\n'
    )
    try:
        out = hutch(
            "template",
            "build",
            "--name",
            name,
            "--build-arg",
            "VERSION=2.5",
            "--ready-cmd",
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8080), 1)\"",
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr + out.stdout
        assert "EXPOSE does not apply to sandboxes" in out.stderr
        assert f"Template '{name}' is ready" in out.stdout

        listed = hutch("template", "list")
        assert listed.returncode == 0, listed.stderr
        assert any(line.split()[0] == name and "code-interpreter-v1" in line for line in listed.stdout.splitlines())

        with Sandbox.create(template=name) as sbx:
            r = sbx.commands.run("pwd; id -un; cat build-info; ls; echo $APP_VERSION")
            assert r.stdout.splitlines() == [
                "/srv/app",
                "user",
                "built 2.5 as user in /srv/app",
                "a.py",
                "b.py",
                "build-info",
                "2.5",
            ]
            # CMD is the start command: the server is up when create returns.
            r = sbx.commands.run(
                "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/a.py').read().decode())\""
            )
            assert r.stdout.strip() == "A = 1"
    finally:
        gone = hutch("template", "delete", name)
    assert gone.returncode == 0, gone.stderr
    assert not Template.exists(name)


def test_failures_are_reported_and_leave_no_template(tmp_path: Path) -> None:
    name = f"cli-bad-{uuid.uuid4().hex[:8]}"
    (tmp_path / "e2b.Dockerfile").write_text("FROM base\nRUN echo checking && false\n")
    out = hutch("template", "build", name, cwd=tmp_path)
    assert out.returncode == 1
    assert "checking" in out.stderr
    assert "Build failed: RUN echo checking && false: the command exited with code 1" in out.stderr
    assert not Template.exists(name)

    # A missing COPY source or a parse error fails before the server is asked for anything.
    (tmp_path / "e2b.Dockerfile").write_text("FROM base\nCOPY missing.txt /x\n")
    out = hutch("template", "build", name, cwd=tmp_path)
    assert out.returncode != 0 and "no file matches 'missing.txt'" in out.stderr
    (tmp_path / "e2b.Dockerfile").write_text("FROM base\nCOPY ../outside /x\n")
    out = hutch("template", "build", name, cwd=tmp_path)
    assert out.returncode != 0 and "inside the build context" in out.stderr
    (tmp_path / "e2b.Dockerfile").write_text("FROM a\nFROM b\n")
    out = hutch("template", "build", name, cwd=tmp_path)
    assert out.returncode != 0 and "multi-stage" in out.stderr
    assert not Template.exists(name)
