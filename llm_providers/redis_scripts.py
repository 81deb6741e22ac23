"""Lua scripts sent on a Redis connection each thread keeps, not through the pool.

The rate limit and the budget counters run one script per use on the
completion path. Taking a connection from redis-py's pool and giving it back,
with its per-command bookkeeping, cost more than the round trip itself; so
each thread sends them on a connection of its own per client, made like the
client pool's (same class, so the fail-fast window of `redis_outage` applies;
same timeouts and health check), and checked like a pooled one before each
use: one the server closed, or with data left unread, is connected afresh. A
forked process, or a new client (a settings change), makes a new connection.
"""

from __future__ import annotations

import os
import threading

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ThreadConnection(threading.local):
    """The connection one thread sends scripts on, and the client and process it is of."""

    client = None
    pid = 0
    connection = None

    def ready(self, client):
        """This thread's connection of `client`, ready to send."""
        pid = os.getpid()
        conn = self.connection
        if conn is None or self.client is not client or self.pid != pid:
            if conn is not None and self.pid == pid:
                conn.disconnect()
            pool = client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            self.client, self.pid, self.connection = client, pid, conn
        conn.connect()
        try:
            if conn.can_read():
                raise RedisConnectionError("Redis connection has data")
        except (RedisConnectionError, RedisTimeoutError, OSError):
            conn.disconnect()
            conn.connect()
            if conn.can_read():
                conn.disconnect()
                raise RedisConnectionError("Redis connection not ready") from None
        return conn

    def run(self, client, script, keys, args):
        """Run `script` (a registered redis-py Script) with `keys` and `args`; its reply.

        A server that lost its scripts (a restart) is sent it again. Raises
        RedisError; after a connection error or timeout the connection is closed,
        so no late reply is read as the next one's.
        """
        conn = None
        try:
            conn = self.ready(client)
            command = conn.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
            conn.send_packed_command(command)
            try:
                return conn.read_response()
            except NoScriptError:
                conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", script.script))
                conn.read_response()
                conn.send_packed_command(command)
                return conn.read_response()
        except (RedisConnectionError, RedisTimeoutError):
            if conn is not None:
                conn.disconnect()
            raise
