"""`manage.py rotate_keys`: re-encrypt every encrypted value under the newest key."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize
from tqdm import tqdm

from llm_providers.clients import adapters_clear
from llm_providers.rotation import (
    DEFAULT_BATCH_SIZE,
    encrypted_columns,
    encrypted_value_count,
    encrypted_values_rotate,
)


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field of every model under SECRET_KEY and the first "
        "SALT_KEY. Safe to run again; values no configured key decrypts are reported and "
        "left untouched (see docs/OPERATIONS.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be re-encrypted; write nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not draw the progress bar."
        )

    def handle(self, *args, **options):
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        columns = encrypted_columns()
        self.stdout.write("Encrypted columns: " + (", ".join(c.label for c in columns) or "none"))
        total = encrypted_value_count(columns)
        with tqdm(
            total=total,
            unit="value",
            desc="Checking" if options["dry_run"] else "Re-encrypting",
            # The command's own stderr, so that callers capturing it get the bar too.
            file=options.get("stderr") or sys.stderr,
            disable=options["no_progress"],
        ) as bar:
            report = encrypted_values_rotate(
                dry_run=options["dry_run"],
                batch_size=options["batch_size"],
                on_progress=bar.update,
            )
        if not options["dry_run"] and report.reencrypted:
            # Adapters built in this process hold decrypted keys only, but drop
            # them anyway so nothing outlives the rotation.
            adapters_clear()

        verb = "Would re-encrypt" if options["dry_run"] else "Re-encrypted"
        summary = (
            f"{verb}: {report.reencrypted}; already current: {report.current}; "
            f"unreadable: {len(report.unreadable)}"
        )
        if report.changed_meanwhile:
            summary += f"; changed by another writer meanwhile: {report.changed_meanwhile}"
        self.stdout.write(summary + ".")
        for value in report.unreadable:
            self.stdout.write(f"  unreadable, left untouched: {value}")
        if report.unreadable:
            count = len(report.unreadable)
            raise CommandError(
                f"{count} value{pluralize(count, ' decrypts,s decrypt')} with none of the "
                f"configured keys and {pluralize(count, 'was,were')} left untouched. Keep the "
                f"old SECRET_KEY/SALT_KEY until {pluralize(count, 'it is,they are')} entered "
                f"again or {pluralize(count, 'its,their')} key is restored."
            )
        if not options["dry_run"]:
            self.stdout.write(self.style.SUCCESS("Every encrypted value is under the newest key."))
