"""Where the SDK finds its server and key: arguments, then HUTCH_*, then E2B_*, then defaults."""

from __future__ import annotations

import pytest

from hutch._config import DEFAULT_API_URL, ConnectionConfig, SandboxTarget

VARS = [
    "HUTCH_API_URL",
    "HUTCH_API_KEY",
    "HUTCH_SANDBOX_URL",
    "HUTCH_DOMAIN",
    "E2B_API_URL",
    "E2B_API_KEY",
    "E2B_SANDBOX_URL",
    "E2B_DOMAIN",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_match_hutch_serve(clean_env: pytest.MonkeyPatch) -> None:
    config = ConnectionConfig.resolve()
    assert config.api_url == DEFAULT_API_URL == "http://127.0.0.1:49982"
    assert config.sandbox_url == DEFAULT_API_URL
    assert config.api_key is None


def test_hutch_variables_win_over_e2b_ones(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("E2B_API_KEY", "e2b_key")
    clean_env.setenv("E2B_API_URL", "http://127.0.0.2:1")
    assert ConnectionConfig.resolve().api_key == "e2b_key"
    assert ConnectionConfig.resolve().api_url == "http://127.0.0.2:1"
    clean_env.setenv("HUTCH_API_KEY", "hutch_key")
    clean_env.setenv("HUTCH_API_URL", "http://127.0.0.3:2/")
    config = ConnectionConfig.resolve()
    assert (config.api_key, config.api_url, config.sandbox_url) == (
        "hutch_key",
        "http://127.0.0.3:2",
        "http://127.0.0.3:2",
    )
    assert ConnectionConfig.resolve(api_key="arg").api_key == "arg"


def test_e2b_sandbox_url_routes_by_headers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("E2B_API_URL", "http://127.0.0.1:9")
    clean_env.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:10")
    target = SandboxTarget("abc", ConnectionConfig.resolve(), envd_access_token="tok")
    assert target.base_url(49983) == "http://127.0.0.1:10"
    headers = target.headers(49983, user="root")
    assert headers["E2b-Sandbox-Id"] == "abc" and headers["E2b-Sandbox-Port"] == "49983"
    assert headers["X-Access-Token"] == "tok"
    assert headers["Authorization"] == "Basic cm9vdDo="


def test_a_domain_alone_means_per_sandbox_hosts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("E2B_DOMAIN", "example.test")
    config = ConnectionConfig.resolve()
    assert config.api_url == "https://api.example.test"
    assert config.sandbox_url is None
    target = SandboxTarget("abc", config)
    assert target.base_url(49999) == "https://49999-abc.example.test"
    assert "E2b-Sandbox-Id" not in target.headers(49999)
