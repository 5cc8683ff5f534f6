"""The code interpreter's kernels other than Python, and environment variables in each.

Python, JavaScript (ESM imports, top-level await), TypeScript and bash must be present in
`code-interpreter-v1`. R and Java are checked only when the sandbox holds a Jupyter kernel
for them: a template built without one skips those tests and says so.

Environment variables: the sandbox's `envs=` reach every kernel; a run's `envs=` apply to
that run only and are restored afterwards (to the sandbox's value, or unset). Java gets
them as system properties, as E2B does.
"""

from __future__ import annotations

import pytest

from ci_helpers import (
    HOME,
    PROBES,
    CodeSandbox,
    EnvProbe,
    code_sandbox,
    stdout_of,
)

pytestmark = pytest.mark.timeout(300)


# --- default kernels ------------------------------------------------------------------------


def test_javascript_kernel_prints_to_stdout(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("console.log('Hello, World!')", language="js")
    assert execution.error is None
    assert execution.logs.stdout == ["Hello, World!\n"]


def test_javascript_kernel_supports_esm_imports(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code(
        "import { readFileSync } from 'fs'\nconsole.log(typeof readFileSync)", language="js"
    )
    assert execution.error is None
    assert execution.logs.stdout == ["function\n"]


def test_javascript_kernel_supports_top_level_await(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("await Promise.resolve('Hello World!')", language="js")
    assert execution.error is None
    assert execution.text == "Hello World!"


def test_javascript_default_context_is_stateful(ci_sandbox: CodeSandbox) -> None:
    ci_sandbox.run_code("let total = 40;", language="javascript")
    assert ci_sandbox.run_code("total += 2; total", language="js").text == "42"


def test_javascript_errors_carry_name_and_value(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("throw new TypeError('bad type')", language="js")
    assert execution.error is not None
    assert execution.error.name == "TypeError"
    assert execution.error.value == "bad type"


def test_typescript_kernel_runs_typed_code(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("const message: string = 'Hello, World!'; console.log(message)", language="ts")
    assert execution.error is None
    assert execution.logs.stdout == ["Hello, World!\n"]


def test_bash_kernel_runs_commands_and_keeps_shell_state(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code("echo hello from bash | tr a-z A-Z", language="bash")
    assert execution.error is None
    assert stdout_of(execution) == "HELLO FROM BASH\n"
    ci_sandbox.run_code("GREETING=hutch", language="bash")
    assert stdout_of(ci_sandbox.run_code("echo ${GREETING}!", language="bash")) == "hutch!\n"


def test_r_kernel_prints(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code('print("Hello, World!")', language="r")
    assert execution.logs.stdout == ['[1] "Hello, World!"\n']


def test_java_kernel_prints(ci_sandbox: CodeSandbox) -> None:
    execution = ci_sandbox.run_code('System.out.println("Hello, World!")', language="java")
    assert stdout_of(execution).strip() == "Hello, World!"


# --- working directory ------------------------------------------------------------------------


def test_every_kernel_starts_in_home(ci_sandbox: CodeSandbox) -> None:
    python = ci_sandbox.run_code("from pathlib import Path; print(Path.cwd())")
    assert stdout_of(python).strip() == HOME
    assert ci_sandbox.run_code("process.cwd()", language="js").text == HOME
    assert ci_sandbox.run_code("process.cwd()", language="ts").text == HOME
    assert stdout_of(ci_sandbox.run_code("pwd", language="bash")).strip() == HOME


def test_r_kernel_starts_in_home(ci_sandbox: CodeSandbox) -> None:
    result = ci_sandbox.run_code("getwd()", language="r")
    assert result.results[0].text is not None
    assert result.results[0].text.strip() == f'[1] "{HOME}"'


def test_java_kernel_starts_in_home(ci_sandbox: CodeSandbox) -> None:
    result = ci_sandbox.run_code('System.getProperty("user.dir")', language="java")
    assert result.text is not None and result.text.strip() == HOME


def test_context_cwd_applies_to_javascript_and_bash(ci_sandbox: CodeSandbox) -> None:
    js = ci_sandbox.create_code_context(language="javascript", cwd="/tmp")
    assert ci_sandbox.run_code("process.cwd()", context=js).text == "/tmp"
    bash = ci_sandbox.create_code_context(language="bash", cwd="/tmp")
    assert bash.language == "bash"
    assert stdout_of(ci_sandbox.run_code("pwd", context=bash)).strip() == "/tmp"


# --- environment variables per language ---------------------------------------------------------


@pytest.mark.parametrize("probe", PROBES, ids=[p.language for p in PROBES])
def test_sandbox_envs_reach_the_kernel_and_a_run_overrides_them_once(probe: EnvProbe) -> None:
    with code_sandbox(envs={"HUTCH_SBX_VAR": "from-sandbox"}) as sbx:
        assert probe.run(sbx, probe.read("HUTCH_SBX_VAR")) == "from-sandbox"
        assert probe.run(sbx, probe.read("HUTCH_SBX_VAR"), envs={"HUTCH_SBX_VAR": "overwrite"}) == "overwrite"
        assert probe.run(sbx, probe.read("HUTCH_SBX_VAR")) == "from-sandbox"


@pytest.mark.parametrize("probe", PROBES, ids=[p.language for p in PROBES])
def test_run_envs_apply_to_that_run_only(ci_sandbox: CodeSandbox, probe: EnvProbe) -> None:
    assert probe.run(ci_sandbox, probe.read("HUTCH_RUN_VAR"), envs={"HUTCH_RUN_VAR": "bar"}) == "bar"
    assert probe.run(ci_sandbox, probe.read_or("HUTCH_RUN_VAR", "default")) == "default"


@pytest.mark.parametrize("probe", PROBES, ids=[p.language for p in PROBES])
def test_run_env_values_with_quotes_arrive_intact(ci_sandbox: CodeSandbox, probe: EnvProbe) -> None:
    # A value is data, never code: quotes and backslashes must not break (or escape) the
    # statement that sets it in the kernel's language.
    tricky = 'it\'s a "quoted" value with a \\ backslash and $dollar'
    printed = ci_sandbox.run_code(probe.print("HUTCH_RUN_VAR"), language=probe.language, envs={"HUTCH_RUN_VAR": tricky})
    assert printed.error is None, f"{printed.error.name}: {printed.error.value}"
    assert stdout_of(printed) == tricky + "\n"
    assert probe.run(ci_sandbox, probe.read_or("HUTCH_RUN_VAR", "default")) == "default"


def test_sandbox_envs_reach_new_contexts_too() -> None:
    with code_sandbox(envs={"HUTCH_SBX_VAR": "from-sandbox"}) as sbx:
        context = sbx.create_code_context()
        assert sbx.run_code("import os; os.environ['HUTCH_SBX_VAR']", context=context).text == "from-sandbox"
        js = sbx.create_code_context(language="js")
        assert sbx.run_code("process.env.HUTCH_SBX_VAR", context=js).text == "from-sandbox"


def test_shell_escape_sees_sandbox_and_run_envs() -> None:
    with code_sandbox(envs={"HUTCH_SBX_VAR": "from-sandbox"}) as sbx:
        execution = sbx.run_code("!echo $HUTCH_SBX_VAR $HUTCH_RUN_VAR", envs={"HUTCH_RUN_VAR": "per-run"})
        assert stdout_of(execution).strip() == "from-sandbox per-run"
