"""Start-up refuses insecure production settings."""

import subprocess
import sys

import pytest

from tests.processes import ROOT

BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "DEBUG": "false",
    "SECRET_KEY": "a-real-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
    "JWT_SIGNING_KEY": "another-real-secret-0123456789-abcdefghijklmnop",
    "WHATSAPP_APP_SECRET": "meta-app-secret",
    "ENV_FILE": "/nonexistent",
    "EMAIL_URL": "smtp+tls://mailer:pw@smtp.example.com:587",
}


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "saas.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_start():
    assert run_check(BASE_ENV).returncode == 0


@pytest.mark.parametrize(
    "name", ["SECRET_KEY", "WHATSAPP_APP_SECRET", "JWT_SIGNING_KEY"]
)
def test_missing_secret_stops_startup(name):
    env = {k: v for k, v in BASE_ENV.items() if k != name}
    result = run_check(env)
    assert result.returncode != 0
    assert f"{name} is missing or left at its development default" in result.stderr


def test_debug_allows_development_defaults():
    env = {"PATH": "/usr/bin:/bin", "DEBUG": "true", "ENV_FILE": "/nonexistent"}
    assert run_check(env).returncode == 0


@pytest.mark.parametrize(
    "email_env",
    [{}, {"EMAIL_HOST": "smtp.example.com", "EMAIL_BACKEND": "console"}],
    ids=["nothing", "non-smtp-backend"],
)
def test_production_without_smtp_host_stops_startup(email_env):
    env = {k: v for k, v in BASE_ENV.items() if k != "EMAIL_URL"}
    email_env = {
        k: v.replace("console", "django.core.mail.backends.console.EmailBackend")
        for k, v in email_env.items()
    }
    result = run_check({**env, **email_env})
    assert result.returncode != 0
    assert "No SMTP host is configured and DEBUG is off" in result.stderr


def test_production_with_email_host_starts():
    env = {k: v for k, v in BASE_ENV.items() if k != "EMAIL_URL"}
    env.update(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="smtp.example.com",
    )
    assert run_check(env).returncode == 0
