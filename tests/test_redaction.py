"""Redis URLs in messages carry no credential, and a malformed one is a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.connection import parse_url

from stream_app.redaction import redacted, redis_url_problem
from stream_app.settings import SettingsError, load_settings

SECRET = "secretpw"

# Every form in which redis-py (parse_url) or redis-cli takes a credential from the URL.
CREDENTIAL_FORMS = [
    ("redis://127.0.0.1:6379/5?password=secretpw", "redis://127.0.0.1:6379/5?password=***"),
    ("redis://svc:secretpw@redis:6379/0", "redis://svc:***@redis:6379/0"),
    ("redis://:secretpw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://:secret%40pw@redis/0", "redis://:***@redis/0"),
    ("redis://:secret:pw@redis/0", "redis://:***@redis/0"),
    ("redis://:secret@pw@redis/0", "redis://:***@redis/0"),
    # redis-cli reads a userinfo without a colon as the password.
    ("redis://secretpw@redis:6379/0", "redis://***@redis:6379/0"),
    ("REDIS://:secretpw@redis/0", "redis://:***@redis/0"),
    (
        "redis://redis/0?username=svc&password=secretpw&db=2",
        "redis://redis/0?username=svc&password=***&db=2",
    ),
    ("redis://redis/0?pass%77ord=secretpw", "redis://redis/0?pass%77ord=***"),
    ("redis://redis/0?password=secretpw&password=x", "redis://redis/0?password=***&password=***"),
    (
        "rediss://svc:secretpw@redis:6380/0?ssl_cert_reqs=none&ssl_password=secretpw",
        "rediss://svc:***@redis:6380/0?ssl_cert_reqs=none&ssl_password=***",
    ),
    ("unix://:secretpw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("unix:///run/redis.sock?password=secretpw", "unix:///run/redis.sock?password=***"),
    # A parameter this module does not know may be a secret.
    ("redis://redis/0?auth_token=secretpw", "redis://redis/0?auth_token=***"),
    # A password with '/', '?' or '#' not percent-encoded: where it ends is unknown.
    ("redis://:12/secretpw@redis/0", "redis://***"),
    ("redis://:12?secretpw@redis/0", "redis://***"),
    ("redis://:12#secretpw@redis/0", "redis://***"),
    ("redis://svc:123/secretpw@redis:6379", "redis://***"),
    ("rediss://redis:notaport/secretpw", "rediss://***"),
]


@pytest.mark.parametrize(("url", "expected"), CREDENTIAL_FORMS)
def test_every_credential_form_is_redacted(url: str, expected: str) -> None:
    assert redacted(url) == expected
    assert SECRET not in redacted(url)
    assert "secret" not in (redis_url_problem(url) or "")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis:6379/0?db=3&socket_timeout=2&protocol=3",
        "rediss://redis:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
        "unix:///run/redis.sock?db=1",
        "redis://svc@redis/0?username=svc",
    ],
)
def test_urls_without_a_password_are_shown_whole(url: str) -> None:
    shown = url if "svc@" not in url else url.replace("svc@", "***@")
    assert redacted(url) == shown
    assert redis_url_problem(url) is None


def test_the_secrets_redis_py_would_use_are_the_ones_hidden() -> None:
    """The cases' secrets are exactly what redis-py reads as a password (so none is missed)."""
    for url, _ in CREDENTIAL_FORMS:
        if redis_url_problem(url) is not None or "secretpw@redis:6379/0" in url:
            continue  # refused at start; or a user name to redis-py, a password to redis-cli
        options = parse_url(url)  # type: ignore[no-untyped-call]
        secrets = [options.get(key) for key in ("password", "ssl_password", "auth_token")]
        assert any(secrets), f"{url}: redis-py reads no secret here"
        for secret in secrets:
            if secret:
                assert secret not in redacted(url)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://127.0.0.1:notaport/5", "port"),
        ("redis://127.0.0.1:99999/5", "port"),
        ("redis://:12/secretpw@redis/0", "percent-encoded"),
        ("redis://127.0.0.1:6379/0?db=x", "'db'"),
        ("http://127.0.0.1:6379/0", "redis://"),
    ],
)
def test_a_bad_url_names_the_cure_not_the_url(
    url: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPI_REDIS_URL", url)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "KPI_REDIS_URL" in message
    assert named in message
    for echoed in (url, "notaport", "99999", SECRET):
        assert echoed not in message


def test_credentials_in_the_bootstrap_servers_are_refused_unechoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KPI_KAFKA_BOOTSTRAP_SERVERS", f"svc:{SECRET}@kafka:9092")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "KPI_KAFKA_SASL_PASSWORD" in str(info.value)
    assert SECRET not in str(info.value)


def _kpi(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *argv],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_a_bad_port_stops_the_commands_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    bad = "redis://127.0.0.1:notaport/5"
    runs = [
        _kpi(tmp_path, "worker", KPI_REDIS_URL=bad),
        _kpi(tmp_path, "dashboard", KPI_REDIS_URL=bad),
        _kpi(tmp_path, "watch", "--once", "--redis-url", f"redis://:12/{SECRET}@redis/0"),
        _kpi(tmp_path, "verify", "events.jsonl", "--redis-url", bad),
    ]
    for done in runs:
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "port is not a number" in done.stderr
        assert SECRET not in done.stderr + done.stdout
