"""Bad input: schemathesis (from PyPI) against the OpenAPI document the server serves.

`GET /openapi.json` describes every control-plane endpoint. Schemathesis generates valid
and invalid requests from it (wrong types, values out of range, missing fields, odd
strings in paths and queries, methods a path does not have, no or a wrong API key) and
checks every answer: never a server error, only documented status codes and content
types, bodies that match the documented schemas, invalid input refused with a 4xx.

It runs as a team of its own (a non-admin key with a small sandbox limit), in passes:
1. random ids everywhere (the 404 and parsing paths of every endpoint);
2. a real sandbox, template, build and name of that team in every path, so the bodies
   and queries reach the handlers' logic (real creates from `base` included, up to the
   team's limit; then 429s);
3. the calls that end a sandbox (`DELETE`, `timeout`), on a sandbox of their own;
4. `/pools` with the admin key, on a template name that does not exist (sizing a real
   pool from random numbers could start a thousand sandboxes);
5. the key API with the admin key, on the team itself and a spare key of it (never the
   keys the passes use).
Whatever the passes created is removed at the end, and the server must still answer.

`HUTCH_FUZZ_EXAMPLES` sets the examples per operation (default 25); `HUTCH_FUZZ_SEED`
repeats a run (each run prints its seed).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import API_URL, api, hutch, key_id

SCHEMATHESIS = os.environ.get("HUTCH_SCHEMATHESIS", "")
EXAMPLES = os.environ.get("HUTCH_FUZZ_EXAMPLES", "25")
SEED = os.environ.get("HUTCH_FUZZ_SEED", "")
# Accepting data the schema allows but the server refuses is not checked: the schema cannot
# say everything the server checks (min <= max, a template that exists, names E2B allows).
EXCLUDED_CHECKS = "positive_data_acceptance"

pytestmark = pytest.mark.skipif(
    not SCHEMATHESIS, reason="HUTCH_SCHEMATHESIS (scripts/test.sh sets it) names no schemathesis"
)


@dataclass
class Fuzzer:
    team: str
    key: str
    admin_key: str
    tmp: Path


@pytest.fixture
def fuzzer(tmp_path: Path) -> Iterator[Fuzzer]:
    team = f"fuzz-{secrets.token_hex(3)}"
    hutch("teams", "create", team, "--max-sandboxes", "3")
    key = hutch("keys", "create", "--name", team, "--team", team).strip().splitlines()[-1]
    admin_key = hutch("keys", "create", "--name", f"{team}-admin", "--team", team, "--admin").strip().splitlines()[-1]
    try:
        yield Fuzzer(team=team, key=key, admin_key=admin_key, tmp=tmp_path)
    finally:
        # Everything the team has goes: sandboxes (running or paused), templates, volumes.
        kill_all(key)
        status, templates = api(key, "GET", "/templates")
        for t in templates if status == 200 and isinstance(templates, list) else []:
            api(key, "DELETE", f"/templates/{t['templateID']}")
        status, volumes = api(key, "GET", "/volumes")
        for v in volumes if status == 200 and isinstance(volumes, list) else []:
            api(key, "DELETE", f"/volumes/{v['volumeID']}")
        # Keys pass 5 made, then the passes' own.
        status, keys = api(admin_key, "GET", "/api-keys")
        for k in keys if status == 200 and isinstance(keys, list) else []:
            if k["id"] not in (key_id(key), key_id(admin_key)):
                api(admin_key, "DELETE", f"/api-keys/{k['id']}")
        for k in (key, admin_key):
            with contextlib.suppress(subprocess.CalledProcessError):
                hutch("keys", "revoke", k)


def kill_all(key: str) -> None:
    """Kills every sandbox of the key's team (running or paused)."""
    status, listed = api(key, "GET", "/v2/sandboxes")
    for s in listed if status == 200 and isinstance(listed, list) else []:
        api(key, "DELETE", f"/sandboxes/{s['sandboxID']}")


def schemathesis(f: Fuzzer, name: str, key: str, params: dict[str, str], *extra: str) -> None:
    """One schemathesis run; fails the test with its report unless every check held."""
    config = f.tmp / f"{name}.toml"
    lines = ["[parameters]"] + [f'"{k}" = "{v}"' for k, v in params.items()]
    config.write_text("\n".join(lines) + "\n")
    cmd = [
        SCHEMATHESIS,
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{API_URL}/openapi.json",
        "--header",
        f"X-API-KEY: {key}",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        EXAMPLES,
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--report",
        "junit",
        "--report-dir",
        str(f.tmp / f"{name}-report"),
        *(["--seed", SEED] if SEED else []),
        *extra,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=f.tmp)
    report = out.stdout + out.stderr
    (f.tmp / f"{name}.txt").write_text(report)
    assert out.returncode == 0, f"schemathesis pass {name!r} found failures:\n{report[-20000:]}"


def new_sandbox(key: str) -> str:
    status, body = api(key, "POST", "/sandboxes", {"templateID": "base", "timeout": 600})
    assert status == 201 and isinstance(body, dict), body
    return str(body["sandboxID"])


def test_schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe(fuzzer: Fuzzer) -> None:
    with urllib.request.urlopen(f"{API_URL}/openapi.json", timeout=10) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("application/json")

    # 1: random ids everywhere.
    schemathesis(fuzzer, "random-ids", fuzzer.key, {})

    # 2: real ids of this team's own things.
    sandbox = new_sandbox(fuzzer.key)
    status, build = api(fuzzer.key, "POST", "/v3/templates", {"name": f"{fuzzer.team}-tpl"})
    assert status == 202 and isinstance(build, dict), build
    real = {
        "path.sandboxID": sandbox,
        "path.templateID": str(build["templateID"]),
        "path.buildID": str(build["buildID"]),
        "path.alias": f"{fuzzer.team}-tpl",
        "path.template": "base",
        "body.templateID": "base",
    }
    ending = ["--exclude-operation-id", "killSandbox", "--exclude-operation-id", "setSandboxTimeout"]
    schemathesis(fuzzer, "real-ids", fuzzer.key, real, *ending)

    # 3: the calls that end a sandbox, on one of their own. Pass 2's creates may have filled
    # the team's limit (and a timeout of 0 may have ended the first sandbox already).
    kill_all(fuzzer.key)
    real["path.sandboxID"] = new_sandbox(fuzzer.key)
    only_ending = ["--include-operation-id", "killSandbox", "--include-operation-id", "setSandboxTimeout"]
    schemathesis(fuzzer, "ending", fuzzer.key, real, *only_ending)

    # 4: the operator's pool endpoints, on a template that does not exist.
    pools = {"path.template": "no-such-template-fuzzed"}
    schemathesis(fuzzer, "pools", fuzzer.admin_key, pools, "--include-path-regex", "^/pools")

    # 5: the key API, on the team and a spare key of it.
    spare = hutch("keys", "create", "--name", "spare", "--team", fuzzer.team).strip().splitlines()[-1]
    keys = {"path.apiKeyID": key_id(spare), "path.teamID": fuzzer.team, "header.X-Team-ID": fuzzer.team}
    schemathesis(fuzzer, "api-keys", fuzzer.admin_key, keys, "--include-path-regex", "api-keys")
    assert api(fuzzer.key, "GET", "/v2/sandboxes")[0] == 200, "the pass revoked a key it was not given"

    # The server answers as before, and the fuzzing left no sandbox behind it could not end.
    with urllib.request.urlopen(f"{API_URL}/health", timeout=10) as r:
        assert r.status == 200
    status, listed = api(fuzzer.key, "GET", "/v2/sandboxes")
    assert status == 200 and isinstance(listed, list)
    for s in listed:
        assert api(fuzzer.key, "DELETE", f"/sandboxes/{s['sandboxID']}")[0] == 204
