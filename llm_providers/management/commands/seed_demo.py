"""`manage.py seed_demo`: create the demo tenant, users and Fake providers, and print logins."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from llm_providers.demo import (
    DEMO_TENANT_SLUG,
    DemoSecretsFileForeign,
    demo_secrets_load,
    demo_secrets_save,
    demo_seed,
)


class Command(BaseCommand):
    help = (
        "Create the demo data (a superuser, the “demo” tenant with an admin, Fake provider "
        "configs, prices of the Fake models, a service key) unless present, and print the "
        "logins. Runs only with DEBUG on, unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even though DEBUG is off (the demo users have printed passwords).",
        )
        parser.add_argument(
            "--secrets-file",
            type=Path,
            default=Path(settings.BASE_DIR) / "var" / "demo-credentials.json",
            help="Where the demo passwords are kept between runs (default: var/).",
        )
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Give demo users a new password when theirs is not the saved one.",
        )
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000",
            help="Where the server will listen, for the printed login address.",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo creates users whose passwords it prints; it runs only with DEBUG "
                "on. Pass --force to seed anyway."
            )
        secrets_file: Path = options["secrets_file"]
        try:
            known = demo_secrets_load(secrets_file)
        except OSError as exc:
            raise CommandError(
                f"Cannot read the demo passwords from {secrets_file}: {exc.strerror}. "
                "Pass --secrets-file with a file path this user can read and write."
            ) from None
        except DemoSecretsFileForeign:
            raise CommandError(
                f"{secrets_file} is not a file of demo passwords (a JSON object of names and "
                "strings). Nothing was seeded; move it away or pass --secrets-file with another "
                "path."
            ) from None
        before = dict(known)
        try:
            # One transaction with the save: users whose passwords could not be
            # kept are not created, so no run leaves logins nobody knows.
            with transaction.atomic():
                result = demo_seed(known=known, reset_passwords=options["reset_passwords"])
                if known != before:
                    demo_secrets_save(secrets_file, known)
        except OSError as exc:
            raise CommandError(
                f"Cannot write the demo passwords to {secrets_file}: {exc.strerror}. Nothing "
                "was seeded; pass --secrets-file with a file path this user can write."
            ) from None

        if result.created:
            self.stdout.write("Created: " + "; ".join(result.created) + ".")
        else:
            self.stdout.write("The demo data is already in place; nothing changed.")
        base_url = options["url"].rstrip("/")
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Log in at {base_url}/admin/"))
        for login in result.logins:
            if login.password:
                self.stdout.write(
                    f"  user {login.username!r}  password {login.password!r}  ({login.role})"
                )
            else:
                self.stdout.write(
                    self.style.WARNING(
                        f"  user {login.username!r}: password changed since the demo was seeded "
                        f"({login.role}); run `manage.py seed_demo --reset-passwords` or "
                        f"`manage.py changepassword {login.username}`."
                    )
                )
        if result.service_key:
            self.stdout.write(
                f"Service key of the “{DEMO_TENANT_SLUG}” tenant (API): {result.service_key}"
            )
        self.stdout.write(f"(Demo passwords are kept in {secrets_file} for the next run.)")
