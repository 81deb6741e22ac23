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
    # The script sent last; its reply, when left unread, goes with the connection.
    sent = None

    def ready(self, client):
        """This thread's connection of `client`, ready to send."""
        pid = os.getpid()
        conn = self.connection
        if self.sent is not None and not self.sent.read and conn is not None:
            conn.disconnect()
        self.sent = None
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

        Raises RedisError; after a connection error or timeout the connection is
        closed, so no late reply is read as the next one's.
        """
        return self.send(client, script, keys, args).reply()

    def send(self, client, script, keys, args) -> SentScript:
        """Send `script` with `keys` and `args`; what reads its reply.

        Another round trip on another connection can run before the reply is
        read, so the two overlap. One script at a time per thread: sending the
        next one before this reply is read closes the connection, and the
        reply is lost.
        """
        conn = None
        try:
            conn = self.ready(client)
            command = conn.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
            conn.send_packed_command(command)
        except (RedisConnectionError, RedisTimeoutError):
            if conn is not None:
                conn.disconnect()
            raise
        self.sent = SentScript(self, conn, script, command)
        return self.sent


class SentScript:
    """A script sent on a thread's connection, its reply not read yet."""

    __slots__ = ("owner", "connection", "script", "command", "read")

    def __init__(self, owner: ThreadConnection, connection, script, command):
        self.owner = owner
        self.connection, self.script, self.command = connection, script, command
        self.read = False

    def reply(self):
        """The script's reply. A server that lost its scripts (a restart) is sent
        it again. Raises RedisError, closing the connection after a connection
        error or timeout.

        Read once, on the thread that sent it, before the next script is sent:
        else its reply is gone with the connection, and what the connection
        holds now is another script's (RedisConnectionError, nothing read)."""
        if self.read or self.owner.sent is not self:
            raise RedisConnectionError("the script's reply went with its connection")
        conn = self.connection
        self.read = True
        try:
            try:
                return conn.read_response()
            except NoScriptError:
                conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", self.script.script))
                conn.read_response()
                conn.send_packed_command(self.command)
                return conn.read_response()
        except (RedisConnectionError, RedisTimeoutError):
            conn.disconnect()
            raise
