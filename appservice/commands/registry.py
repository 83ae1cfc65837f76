"""A small command registry: each command declared once with its usage, help and who may run it."""

from __future__ import annotations

import enum
import logging
import shlex
from dataclasses import dataclass
from typing import Awaitable, Callable

from bridge.errors import SwitchboardError
from bridge.model import Advisor, Conversation

log = logging.getLogger(__name__)


class Role(enum.IntEnum):
    ANYONE = 0
    ADVISOR = 1
    ADMIN = 2


@dataclass
class CommandContext:
    sender: str
    room_id: str
    args: list[str]
    role: Role
    advisor: Advisor | None
    conversation: Conversation | None  # set when the command is typed in a visitor's room
    reply: Callable[[str], Awaitable[None]]


Handler = Callable[[CommandContext], Awaitable[None]]


class UsageError(Exception):
    """Raised by a handler when the arguments don't fit; the bot answers with the usage line."""


@dataclass(frozen=True)
class Command:
    name: str
    usage: str  # the arguments, e.g. "add|remove @user:server"
    help: str
    role: Role
    handler: Handler
    in_conversation_only: bool = False

    @property
    def usage_line(self) -> str:
        return f"!{self.name} {self.usage}".rstrip()


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command !{command.name} is registered twice")
        self._commands[command.name] = command

    def visible_to(self, role: Role) -> list[Command]:
        return [c for c in self._commands.values() if c.role <= role]

    def help_text(self, role: Role) -> str:
        lines = ["Commands you can use:"]
        lines += [f"{c.usage_line} — {c.help}" for c in self.visible_to(role)]
        return "\n".join(lines)

    async def run(self, text: str, ctx: CommandContext) -> None:
        """Parse ``!name args`` and run it; every outcome gets an answer."""
        try:
            words = shlex.split(text[1:])
        except ValueError:
            words = text[1:].split()
        if not words:
            await ctx.reply("Type !help for the list of commands.")
            return
        name, ctx.args = words[0].lower(), words[1:]
        command = self._commands.get(name)
        if command is None or command.role > ctx.role:
            await ctx.reply(f"Unknown command !{name}. Type !help for the commands you can use.")
            return
        if command.in_conversation_only and ctx.conversation is None:
            await ctx.reply(f"!{name} works in a visitor's room.")
            return
        try:
            await command.handler(ctx)
        except UsageError as e:
            detail = f"{e} " if str(e) else ""
            await ctx.reply(f"{detail}Usage: {command.usage_line}")
        except SwitchboardError as e:
            await ctx.reply(e.message)
        except Exception:
            log.exception("command !%s from %s failed", name, ctx.sender)
            await ctx.reply(
                f"!{name} failed because of an internal error; it was logged. Try again."
            )
