"""Create an API token for a user and print it, the one time it can be shown."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from llm_providers.management.arguments import text
from llm_providers.services import user_token_create

MAX_EXPIRY_DAYS = 36_500


class Command(BaseCommand):
    help = (
        "Create an API token (`Authorization: Token <token>`) for a user. The token is printed "
        "on standard output once; only its hash is stored, so it cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", type=text, help="The user the token acts as.")
        parser.add_argument(
            "--name",
            type=text,
            required=True,
            help="What the token is for, e.g. the script using it.",
        )
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help=f"Refuse the token after this many days, 1 to {MAX_EXPIRY_DAYS:,} "
            "(default: never).",
        )

    def handle(self, *args, **options):
        users = get_user_model()._default_manager
        try:
            user = users.get_by_natural_key(options["username"])
        except users.model.DoesNotExist:
            raise CommandError(f"No user “{options['username']}”.") from None
        if not user.is_active:
            raise CommandError(
                f"The user “{user.get_username()}” is inactive: its tokens are refused."
            )
        days = options["expires_in_days"]
        if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
            # A bound, too: a few million days lie past the last date there is.
            raise CommandError(
                f"--expires-in-days must be from 1 to {MAX_EXPIRY_DAYS:,} (100 years); leave it "
                "out for a token that never expires."
            )
        expiry_date = timezone.now() + timedelta(days=days) if days is not None else None
        try:
            user_token, token = user_token_create(
                user=user, name=options["name"], expiry_date=expiry_date
            )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stderr.write(
            f"Token “{user_token.name}” of {user.get_username()} (prefix {user_token.prefix}) "
            "created. Store it now: it is shown only once."
        )
        # Alone on standard output, so a script can capture it.
        self.stdout.write(token)
