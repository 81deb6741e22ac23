"""The `user_token_create` management command."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from llm_providers.models import UserToken
from llm_providers.selectors import user_token_for_key
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("user_token_create", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_prints_the_token_alone_once_and_stores_its_hash():
    user = UserFactory(username="alice")

    out, err = _run("alice", "--name", "nightly report")

    token = out.strip()
    user_token = UserToken.objects.get()
    assert out == f"{token}\n"
    assert user_token_for_key(key=token) == user_token
    assert (user_token.user, user_token.name, user_token.expiry_date) == (
        user,
        "nightly report",
        None,
    )
    assert err == (
        f"Token “nightly report” of alice (prefix {user_token.prefix}) created. "
        "Store it now: it is shown only once.\n"
    )
    assert token not in err
    assert token not in user_token.hashed_key


def test_command_takes_an_expiry_of_a_hundred_years():
    UserFactory(username="alice")
    before = timezone.now()

    _run("alice", "--name", "archive", "--expires-in-days", "36500")

    expiry_date = UserToken.objects.get().expiry_date
    assert before + timedelta(days=36500) <= expiry_date <= timezone.now() + timedelta(days=36500)


def test_command_sets_expiry_in_days():
    UserFactory(username="alice")
    before = timezone.now()

    _run("alice", "--name", "ci", "--expires-in-days", "30")

    expiry_date = UserToken.objects.get().expiry_date
    assert before + timedelta(days=30) <= expiry_date <= timezone.now() + timedelta(days=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bob", "--name", "ci"), "No user “bob”."),
        (("inactive", "--name", "ci"), "The user “inactive” is inactive: its tokens are refused."),
        (("alice", "--name", "  "), "Name the token, e.g. after the program using it."),
        (
            ("alice", "--name", "ci", "--expires-in-days", "0"),
            "--expires-in-days must be from 1 to 36,500 (100 years); leave it out for a token "
            "that never expires.",
        ),
        (
            # Past the last date there is: no traceback, a message.
            ("alice", "--name", "ci", "--expires-in-days", "3000000"),
            "--expires-in-days must be from 1 to 36,500 (100 years); leave it out for a token "
            "that never expires.",
        ),
    ],
    ids=["unknown-user", "inactive-user", "blank-name", "no-days", "past-the-calendar"],
)
def test_command_refuses_what_cannot_make_a_usable_token(args, message):
    UserFactory(username="alice")
    UserFactory(username="inactive", is_active=False)

    with pytest.raises(CommandError) as caught:
        _run(*args)

    assert str(caught.value) == message
    assert UserToken.objects.count() == 0
