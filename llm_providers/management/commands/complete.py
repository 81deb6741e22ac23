"""Run one completion (or stream) for a tenant from the shell and show what it cost."""

from django.core.management.base import BaseCommand, CommandError

from llm_providers.chat_input import deadline_invalid, deadline_validate
from llm_providers.completion import complete, stream
from llm_providers.exceptions import ApplicationError
from llm_providers.management.arguments import text
from llm_providers.models import Tenant


class Command(BaseCommand):
    help = (
        "Run a completion through the full pipeline (routing, limits, cache, call log) and print "
        "the content, provider, model, tokens, cost and latency."
    )

    def add_arguments(self, parser):
        parser.add_argument("prompt", type=text, help="The user message.")
        parser.add_argument(
            "--tenant", type=text, default="demo", help="Tenant slug (default: demo)."
        )
        parser.add_argument("--service", type=text, default="", help="Service name, for routing.")
        parser.add_argument("--customer", type=text, default="", help="Customer id, for routing.")
        parser.add_argument(
            "--model", type=text, default=None, help="Model for the primary target."
        )
        parser.add_argument("--system", type=text, default="", help="An optional system message.")
        parser.add_argument("--max-tokens", type=int, default=None)
        parser.add_argument("--temperature", type=float, default=None)
        parser.add_argument("--json", action="store_true", help="Ask for a JSON answer.")
        parser.add_argument("--stream", action="store_true", help="Stream the answer.")
        parser.add_argument(
            "--deadline",
            default=None,
            metavar="SECONDS",
            help=(
                "How long the whole call may take, retries and fallbacks included (1 to 600, "
                "and at most USAGE_BUDGET_RESERVATION_TTL_SECONDS less 60; "
                "default: LLM_CALL_DEADLINE_SECONDS)."
            ),
        )

    def handle(self, *args, **options):
        deadline = _deadline(options["deadline"])
        try:
            tenant = Tenant.objects.get(slug=options["tenant"])
        except Tenant.DoesNotExist:
            raise CommandError(
                f"No tenant with slug “{options['tenant']}”. Run `manage.py seed_demo` for the "
                "demo tenant."
            ) from None
        messages = []
        if options["system"]:
            messages.append({"role": "system", "content": options["system"]})
        messages.append({"role": "user", "content": options["prompt"]})
        kwargs = {
            "tenant": tenant,
            "messages": messages,
            "customer_id": options["customer"],
            "service_name": options["service"],
            "model": options["model"],
            "max_tokens": options["max_tokens"],
            "temperature": options["temperature"],
            "json_mode": options["json"],
            "deadline": deadline,
        }
        try:
            if options["stream"]:
                chunks = stream(**kwargs)
                for text in chunks:
                    self.stdout.write(text, ending="")
                    self.stdout.flush()
                self.stdout.write("")
                result = chunks.result
            else:
                result = complete(**kwargs)
                self.stdout.write(result.content)
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None

        usage = result.usage
        # 12 places, like the call log: a call can cost well under a micro-dollar.
        cost = "unpriced" if result.cost_usd is None else f"${result.cost_usd:.12f}"
        self.stdout.write("")
        self.stdout.write(f"provider:   {result.provider} ({result.provider_type})")
        self.stdout.write(f"model:      {result.model}  [route: {result.route_rule}]")
        self.stdout.write(
            f"tokens:     {usage.input_tokens} in ({usage.cache_read_tokens} cached), "
            f"{usage.output_tokens} out ({usage.reasoning_tokens} reasoning)"
            + ("  [estimated]" if result.usage_estimated else "")
        )
        self.stdout.write(f"cost:       {cost}  [{result.price_source}]")
        self.stdout.write(
            f"latency:    {result.latency_ms} ms  cached: {'yes' if result.cached else 'no'}  "
            f"attempts: {result.attempts}"
        )
        self.stdout.write(f"request id: {result.request_id}")


def _deadline(value: str | None) -> float | None:
    """The --deadline value, checked as the API checks `deadline`."""
    if value is None:
        return None
    try:
        return deadline_validate(float(value))
    except (ValueError, ApplicationError):
        raise CommandError(f"--deadline: {deadline_invalid()}") from None
