"""What the layer adds to a provider call: bare openai SDK vs `complete()`.

A loopback OpenAI-compatible upstream runs in its own process and answers at
once. The same sequence of calls goes through the bare openai SDK and through
`complete()` (route cache, rate limit, pricing and the CallLog insert all on;
`--response-cache` adds a response-cache lookup and store per call), and
through `complete()` for a second tenant that also has a blocking budget
(warm counter: one reservation and one settlement per call), interleaved
call by call so all three see the same machine noise. Prints p50 / p99 of
each, the added time per call, what the budget adds, and the throughput ratio. Use PostgreSQL
and Redis for the figures that count:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llm_bench \\
    REDIS_URL=redis://127.0.0.1:6379/9 .venv/bin/python bench/overhead.py --calls 3000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "gpt-4o-mini"


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider

    def do_POST(self):  # noqa: N802 - the stdlib's handler naming
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": request.get("model", MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
            }
        ).encode()
        # Status line, headers and body in one write: two small writes would
        # meet Nagle's algorithm and the client's delayed ACK (40 ms stalls).
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)

    def log_message(self, *args):
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def _serve(port: int) -> None:
    _Server(("127.0.0.1", port), _Upstream).serve_forever()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the loopback upstream did not start")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    # DEBUG off: no query log, as in production.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 40)
    os.environ.setdefault("SALT_KEY", "bench-salt")
    os.environ["PROVIDER_ALLOW_PRIVATE_URLS"] = "1"
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--response-cache",
        action="store_true",
        help="turn the tenant's response cache on (every prompt differs: a miss and a store)",
    )
    args = parser.parse_args()

    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    _wait_for(port)
    _django_setup()

    import openai
    from django.conf import settings
    from django.db import connection

    from llm_providers.completion import complete
    from llm_providers.models import ModelPrice, Tenant
    from llm_providers.services import provider_config_create
    from usage.bookkeeping import bookkeeping_flush
    from usage.models import Budget

    base_url = f"http://127.0.0.1:{port}/v1"

    def tenant_create(label: str) -> Tenant:
        tenant = Tenant.objects.create(
            name=label,
            slug=f"{label}-{uuid.uuid4().hex[:8]}",
            response_cache_ttl_seconds=60 if args.response_cache else 0,
        )
        provider_config_create(
            tenant=tenant,
            name="loopback",
            provider_type="openai_compatible",
            api_key="sk-bench-key-0123456789abcdef",
            base_url=base_url,
            default_model=MODEL,
            is_default=True,
            # Limits far above the load, so the check runs but never refuses.
            rpm_limit=10_000_000,
            tpm_limit=1_000_000_000,
        )
        ModelPrice.objects.create(
            tenant=tenant,
            provider_type="openai_compatible",
            model=MODEL,
            input_per_mtok="0.15",
            output_per_mtok="0.60",
            effective_from="2020-01-01",
        )
        return tenant

    tenant = tenant_create("bench")
    budgeted = tenant_create("bench-budget")
    # A blocking budget far above the load: every call reserves and settles.
    Budget.objects.create(
        tenant=budgeted, name="cap", action="block", period="monthly", limit_usd="1000000"
    )
    bare = openai.OpenAI(base_url=base_url, api_key="sk-bench-key-0123456789abcdef", max_retries=0)

    def messages(i: int) -> list[dict]:
        # A distinct prompt per call: a response cache, when on, always misses.
        return [{"role": "user", "content": f"Say ok ({i})"}]

    bare_times: list[float] = []
    layer_times: list[float] = []
    budget_times: list[float] = []
    # The call log row and budget settlement of a call are written after it
    # returns (usage/bookkeeping.py). That work is waited for outside the timed
    # call, so it is not charged to the next call, and counted in throughput.
    flush_times: list[float] = []

    def flushed() -> None:
        started = time.perf_counter()
        bookkeeping_flush()
        flush_times.append(time.perf_counter() - started)

    try:
        for i in range(args.warmup):
            bare.chat.completions.create(model=MODEL, messages=messages(-i - 1))
            complete(tenant=tenant, messages=messages(-i - 1), service_name="bench")
            complete(tenant=budgeted, messages=messages(-i - 1), service_name="bench")
            bookkeeping_flush()
        flush_times.clear()
        for i in range(args.calls):
            started = time.perf_counter()
            bare.chat.completions.create(model=MODEL, messages=messages(i))
            bare_times.append(time.perf_counter() - started)
            # The two layer variants swap places every call: neither always
            # runs first after the bare call.
            variants = [(tenant, layer_times), (budgeted, budget_times)]
            for variant_tenant, times in variants if i % 2 == 0 else variants[::-1]:
                started = time.perf_counter()
                complete(tenant=variant_tenant, messages=messages(i), service_name="bench")
                times.append(time.perf_counter() - started)
                flushed()
    finally:
        tenant.delete()
        budgeted.delete()
        server.terminate()

    ms = 1000
    added = [(layer - base) * ms for layer, base in zip(layer_times, bare_times, strict=True)]
    bare_p50, bare_p99 = _quantile(bare_times, 0.5) * ms, _quantile(bare_times, 0.99) * ms
    layer_p50, layer_p99 = _quantile(layer_times, 0.5) * ms, _quantile(layer_times, 0.99) * ms
    print(f"backends: database={connection.vendor}, cache={settings.CACHES['default']['BACKEND']}")
    print(
        f"calls: {args.calls} (after {args.warmup} warm-up), response cache "
        f"{'on' if args.response_cache else 'off'}"
    )
    print(f"bare openai SDK   p50 {bare_p50:7.3f} ms   p99 {bare_p99:7.3f} ms")
    print(f"complete()        p50 {layer_p50:7.3f} ms   p99 {layer_p99:7.3f} ms")
    print(
        f"added (quantiles) p50 {layer_p50 - bare_p50:7.3f} ms   p99 {layer_p99 - bare_p99:7.3f} ms"
    )
    print(
        f"added (per pair)  p50 {statistics.median(added):7.3f} ms   "
        f"p99 {_quantile(added, 0.99):7.3f} ms"
    )
    budget_p50, budget_p99 = _quantile(budget_times, 0.5) * ms, _quantile(budget_times, 0.99) * ms
    budget_added = [(b - a) * ms for b, a in zip(budget_times, layer_times, strict=True)]
    print(f"complete()+budget p50 {budget_p50:7.3f} ms   p99 {budget_p99:7.3f} ms")
    print(
        f"budget adds       p50 {budget_p50 - layer_p50:7.3f} ms   "
        f"(per pair p50 {statistics.median(budget_added):.3f} ms)"
    )
    # Each call's after-call writes, counted once per layer call.
    layer_flush = sum(flush_times) / 2
    print(f"throughput ratio  complete()/bare = {sum(bare_times) / sum(layer_times):.3f}")
    print(
        "throughput ratio  with the after-call writes counted = "
        f"{sum(bare_times) / (sum(layer_times) + layer_flush):.3f}"
    )


if __name__ == "__main__":
    main()
