"""Loads the Lua scripts that carry every state change (one script, one transition).

Each script file opens with a comment naming its KEYS and ARGV; `lua/lib.lua` holds the
helpers they share and is put in front of each one here.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "heartbeat",
    "ack",
    "fail",
    "reap",
    "give_back",
    "pause",
    "dead_letters",
    "idem_begin",
    "idem_commit",
    "purge_lane",
)


@cache
def source(name: str) -> str:
    """The full text of one script, shared helpers included."""
    lua = files("engine") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """The engine's scripts, registered on one client (EVALSHA, loaded on first use)."""

    def __init__(self, redis: Redis) -> None:
        self.enqueue = redis.register_script(source("enqueue"))
        self.claim = redis.register_script(source("claim"))
        self.heartbeat = redis.register_script(source("heartbeat"))
        self.ack = redis.register_script(source("ack"))
        self.fail = redis.register_script(source("fail"))
        self.reap = redis.register_script(source("reap"))
        self.give_back = redis.register_script(source("give_back"))
        self.pause = redis.register_script(source("pause"))
        self.dead_letters = redis.register_script(source("dead_letters"))
        self.idem_begin = redis.register_script(source("idem_begin"))
        self.idem_commit = redis.register_script(source("idem_commit"))
        self.purge_lane = redis.register_script(source("purge_lane"))


__all__ = ["SCRIPT_NAMES", "AsyncScript", "Scripts", "source"]
