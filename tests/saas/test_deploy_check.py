"""`manage.py check --deploy` passes with production settings from the environment."""

import subprocess
import sys

from tests.processes import ROOT


def test_check_deploy_has_no_warnings(subprocess_env):
    env = {
        **subprocess_env,
        "DEBUG": "false",
        "SECRET_KEY": "k7#Qm2!vX9pL4$wR8zT1&nB6^cY3*hJ5@fD0(sG2)eA7+uK9=oP4-iM1_lN8",
        "JWT_SIGNING_KEY": "Zx8!pQ3#vL6$tR9&wB2^nC5*mY7@hK1(jF4)gD0+sA3=eU6-oI9_kP2",
        "WHATSAPP_APP_SECRET": "0123456789abcdef0123456789abcdef",
        "WHATSAPP_VERIFY_TOKEN": "verify-0123456789",
        "ALLOWED_HOSTS": "api.salon.example",
        "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",
        "SECURE_SSL_REDIRECT": "true",
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "true",
        "ENV_FILE": "/nonexistent",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
