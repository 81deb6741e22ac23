"""Management commands: text arguments that are not valid UTF-8 (bytes a
terminal in another encoding sends) are refused with a message naming the
argument, before anything is looked up or written."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from llm_providers.models import UserToken
from tests.factories import TenantFactory, UserFactory
from usage.models import CallLog

pytestmark = pytest.mark.django_db

# What Python makes of the byte 0xff in a command line it decodes as UTF-8.
NOT_UTF8 = "caf\udcff"
MESSAGE = "is not valid UTF-8 text; check the terminal's character encoding (e.g. LANG=C.UTF-8)."


@pytest.mark.parametrize(
    ("command", "args", "argument"),
    [
        ("complete", [NOT_UTF8], "prompt"),
        ("complete", ["hi", "--tenant", NOT_UTF8], "--tenant"),
        ("complete", ["hi", "--model", NOT_UTF8], "--model"),
        ("complete", ["hi", "--system", NOT_UTF8], "--system"),
        ("complete", ["hi", "--customer", NOT_UTF8], "--customer"),
        ("complete", ["hi", "--service", NOT_UTF8], "--service"),
        ("usage_backfill", ["--from", "2026-01-01", "--tenant", NOT_UTF8], "--tenant"),
        ("user_token_create", [NOT_UTF8, "--name", "ci"], "username"),
        ("user_token_create", ["alice", "--name", NOT_UTF8], "--name"),
        ("user_token_create", ["alice", "--name", "a\x00b"], "--name"),
    ],
    ids=str,
)
def test_text_argument_that_is_not_utf8_is_refused_naming_it(command, args, argument):
    TenantFactory(slug="demo")
    UserFactory(username="alice")

    with pytest.raises(CommandError) as caught:
        call_command(command, *args, stdout=StringIO(), stderr=StringIO())

    problem = "must not contain NUL characters." if "\x00" in "".join(args) else MESSAGE
    assert str(caught.value) == f"Error: argument {argument}: {problem}"
    assert (CallLog.objects.count(), UserToken.objects.count()) == (0, 0)


def test_command_line_with_a_byte_that_is_not_utf8_exits_with_a_message_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "manage.py", "user_token_create", b"caf\xff", "--name", "ci"],
        cwd=Path(settings.BASE_DIR),
        env={**os.environ, "PYTHONIOENCODING": "utf-8:backslashreplace"},
        capture_output=True,
        timeout=60,
    )

    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert "Traceback" not in stderr
    assert f"error: argument username: {MESSAGE}" in stderr
