"""The code interpreter's kernels and per-language environment variables (async SDK).

Mirrors test_code_interpreter_languages.py; R and Java are skipped when the sandbox holds
no Jupyter kernel for them.
"""

from __future__ import annotations

import pytest

from ci_helpers import (
    HOME,
    PROBES,
    AsyncCodeSandbox,
    EnvProbe,
    async_code_sandbox,
    stdout_of,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


async def test_javascript_kernel_prints_imports_and_awaits(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code("console.log('Hello, World!')", language="js")
    assert execution.logs.stdout == ["Hello, World!\n"]

    execution = await async_ci_sandbox.run_code(
        "import { readFileSync } from 'fs'\nconsole.log(typeof readFileSync)", language="js"
    )
    assert execution.logs.stdout == ["function\n"]

    execution = await async_ci_sandbox.run_code("await Promise.resolve('Hello World!')", language="js")
    assert execution.text == "Hello World!"


async def test_typescript_kernel_runs_typed_code(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code(
        "const message: string = 'Hello, World!'; console.log(message)", language="ts"
    )
    assert execution.logs.stdout == ["Hello, World!\n"]
    assert (await async_ci_sandbox.run_code("process.cwd()", language="ts")).text == HOME


async def test_bash_kernel_runs_in_home(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code("pwd", language="bash")
    assert stdout_of(execution).strip() == HOME


async def test_r_kernel_prints(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code('print("Hello, World!")', language="r")
    assert execution.logs.stdout == ['[1] "Hello, World!"\n']


async def test_java_kernel_prints(async_ci_sandbox: AsyncCodeSandbox) -> None:
    execution = await async_ci_sandbox.run_code('System.out.println("Hello, World!")', language="java")
    assert stdout_of(execution).strip() == "Hello, World!"


@pytest.mark.parametrize("probe", PROBES, ids=[p.language for p in PROBES])
async def test_sandbox_envs_reach_the_kernel_and_a_run_overrides_them_once(probe: EnvProbe) -> None:
    async with async_code_sandbox(envs={"HUTCH_SBX_VAR": "from-sandbox"}) as sbx:
        assert await probe.run_async(sbx, probe.read("HUTCH_SBX_VAR")) == "from-sandbox"
        assert (
            await probe.run_async(sbx, probe.read("HUTCH_SBX_VAR"), envs={"HUTCH_SBX_VAR": "overwrite"}) == "overwrite"
        )
        assert await probe.run_async(sbx, probe.read("HUTCH_SBX_VAR")) == "from-sandbox"


@pytest.mark.parametrize("probe", PROBES, ids=[p.language for p in PROBES])
async def test_run_envs_apply_to_that_run_only(async_ci_sandbox: AsyncCodeSandbox, probe: EnvProbe) -> None:
    assert await probe.run_async(async_ci_sandbox, probe.read("HUTCH_RUN_VAR"), envs={"HUTCH_RUN_VAR": "bar"}) == "bar"
    assert await probe.run_async(async_ci_sandbox, probe.read_or("HUTCH_RUN_VAR", "default")) == "default"
