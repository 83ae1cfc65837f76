"""Admin commands for routing by topic: which group each pre-chat topic's visitors go to."""

from __future__ import annotations

from bridge.services.topics import TopicService

from .registry import Command, CommandContext, CommandRegistry, Role, UsageError

USAGE = "list | route <topic> <group path>"


def register(registry: CommandRegistry, topics: TopicService) -> None:
    async def topic(ctx: CommandContext) -> None:
        if not ctx.args:
            raise UsageError()
        action, rest = ctx.args[0].lower(), ctx.args[1:]
        if action == "list" and not rest:
            lines = [
                f"{line.topic} ({line.label}) → {line.path}"
                + (" (isolated)" if line.isolated else "")
                + (" (its group was deleted)" if line.lost else "")
                for line in await topics.table()
            ]
            await ctx.reply(
                "Topics (id (label) → group):\n" + ("\n".join(lines) or "no topics configured")
            )
        elif action == "route" and len(rest) == 2:
            path = await topics.route(rest[0], rest[1])
            await ctx.reply(f"Visitors choosing {rest[0]} now go to {path}.")
        else:
            raise UsageError()

    registry.register(
        Command(
            "topic",
            USAGE,
            "which group each pre-chat topic's visitors are offered to (/ is everyone)",
            Role.ADMIN,
            topic,
        )
    )
