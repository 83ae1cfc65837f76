"""Admin commands for the outbox: side effects that failed for good wait here for a decision."""

from __future__ import annotations

import datetime
from typing import Callable

from bridge.ports import Clock, OutboxStore

from .registry import Command, CommandContext, CommandRegistry, Role, UsageError

SHOWN = 20


def _utc(ts: float) -> str:
    return f"{datetime.datetime.fromtimestamp(ts, datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def register(
    registry: CommandRegistry, outbox: OutboxStore, clock: Clock, wake: Callable[[], None]
) -> None:
    async def outbox_(ctx: CommandContext) -> None:
        if not ctx.args or ctx.args[0] not in ("parked", "retry", "discard"):
            raise UsageError()
        action, rest = ctx.args[0], ctx.args[1:]
        if action == "parked":
            rows = await outbox.parked()
            if not rows:
                await ctx.reply("Nothing is parked: every side effect ran or is on its way.")
                return
            lines = [
                f"#{r.id} {r.kind} ({r.key}), {r.failures} failures, since {_utc(r.created_at)}: "
                f"{r.last_error or 'no error recorded'}"
                for r in rows[:SHOWN]
            ]
            more = f"\n… and {len(rows) - SHOWN} more." if len(rows) > SHOWN else ""
            await ctx.reply(
                f"{len(rows)} parked (each holds back the later work of its conversation):\n"
                + "\n".join(lines)
                + more
                + "\nType !outbox retry <id> once the cause is fixed, or !outbox discard <id>."
            )
            return
        if len(rest) != 1 or not rest[0].lstrip("#").isdigit():
            raise UsageError(f"!outbox {action} takes the number of a parked row.")
        row_id = int(rest[0].lstrip("#"))
        if action == "retry":
            if await outbox.unpark(row_id, clock.now()):
                wake()
                await ctx.reply(f"#{row_id} will be tried again now.")
                return
        elif await outbox.discard(row_id, clock.now()):
            wake()  # the rows behind it may run now
            await ctx.reply(f"#{row_id} is discarded; the work after it goes ahead.")
            return
        await ctx.reply(f"No parked row #{row_id}. Type !outbox parked for the list.")

    registry.register(
        Command(
            "outbox",
            "parked | retry <id> | discard <id>",
            "side effects that failed for good: list, retry or discard them",
            Role.ADMIN,
            outbox_,
        )
    )
