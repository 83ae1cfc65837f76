"""Commands of advisors and admins: who advises, availability, the queue, closing a chat."""

from __future__ import annotations

from bridge.desk import Desk
from bridge.model import ConversationStatus
from bridge.routing import advisor_load, queue_order

from . import topics as topic_commands
from .registry import Command, CommandContext, CommandRegistry, Role, UsageError


def register(registry: CommandRegistry, desk: Desk, *, default_capacity: int) -> None:
    advisors, conversations = desk.advisors, desk.rooms
    open_conversations = desk.store.open_conversations

    async def help_(ctx: CommandContext) -> None:
        await ctx.reply(registry.help_text(ctx.role))

    async def advisor(ctx: CommandContext) -> None:
        if not ctx.args or ctx.args[0] not in ("add", "remove", "list"):
            raise UsageError()
        action, rest = ctx.args[0], ctx.args[1:]
        if action == "list":
            people = await advisors.list()
            if not people:
                await ctx.reply("No advisors yet. Add one with !advisor add @user:server")
                return
            load = advisor_load(await open_conversations())
            lines = [
                f"{a.mxid} — {'available' if a.available else 'away'}, presence "
                f"{a.presence.value}, {load[a.mxid]}/{a.capacity or default_capacity} visitors"
                for a in people
            ]
            await ctx.reply("Advisors:\n" + "\n".join(lines))
            return
        if len(rest) != 1:
            raise UsageError(f"!advisor {action} takes one Matrix user id.")
        if action == "add":
            added, created = await advisors.add(rest[0])
            if not created:
                await ctx.reply(f"{added.mxid} is already an advisor.")
                return
            await ctx.reply(
                f"{added.mxid} is now an advisor. They start as away: they type !available to "
                "receive visitors."
            )
        else:
            await advisors.remove(rest[0])
            await ctx.reply(f"{rest[0]} is no longer an advisor.")

    async def available(ctx: CommandContext) -> None:
        a = await advisors.set_available(ctx.sender, True)
        note = (
            ""
            if a.reachable
            else " (but your Matrix presence is offline or unavailable: nobody comes until online)"
        )
        await ctx.reply(f"You are available: new visitors will be sent to you.{note}")

    async def away(ctx: CommandContext) -> None:
        await advisors.set_available(ctx.sender, False)
        await ctx.reply("You are away: no new visitors. Your open chats stay with you.")

    async def capacity(ctx: CommandContext) -> None:
        if len(ctx.args) != 1:
            raise UsageError()
        value = ctx.args[0]
        if value == "default":
            number = None
        elif value.isdigit():
            number = int(value)
        else:
            raise UsageError(f"{value!r} is not a number.")
        a = await advisors.set_capacity(ctx.sender, number)
        await ctx.reply(f"You take up to {a.capacity or default_capacity} visitors at once.")

    async def status(ctx: CommandContext) -> None:
        assert ctx.advisor is not None
        a = ctx.advisor
        load = advisor_load(await open_conversations())
        await ctx.reply(
            f"You are {'available' if a.available else 'away'}; Matrix presence "
            f"{a.presence.value}; {load[a.mxid]} of {a.capacity or default_capacity} visitors."
        )

    async def queue(ctx: CommandContext) -> None:
        open_ = await open_conversations()
        # a member of an isolated group sees only that group's queue
        scope = await desk.topics.scope_of(ctx.advisor.mxid) if ctx.advisor else None
        if scope is not None:
            open_ = [c for c in open_ if c.topic in scope[1]]
        waiting = queue_order(open_)
        offered = sum(c.status is ConversationStatus.INVITING for c in open_)
        active = sum(c.status is ConversationStatus.ACTIVE for c in open_)
        await ctx.reply(
            f"{len(waiting)} waiting, {offered} being offered, {active} in conversation"
            + (f" in {scope[0]}." if scope is not None else ".")
        )

    async def close(ctx: CommandContext) -> None:
        assert ctx.conversation is not None
        name = ctx.advisor.name if ctx.advisor else ctx.sender
        await conversations.advisor_close(ctx.conversation.room_id, ctx.sender, name)  # type: ignore[arg-type]

    topic_commands.register(registry, desk.topics)
    for command in (
        Command("help", "", "list the commands you can use", Role.ANYONE, help_),
        Command(
            "advisor",
            "add|remove @user:server, or !advisor list",
            "manage who answers visitors",
            Role.ADMIN,
            advisor,
        ),
        Command("available", "", "receive new visitors", Role.ADVISOR, available),
        Command("away", "", "stop receiving new visitors", Role.ADVISOR, away),
        Command(
            "capacity",
            "<number>|default",
            "how many visitors you take at once",
            Role.ADVISOR,
            capacity,
        ),
        Command("status", "", "your availability, presence and load", Role.ADVISOR, status),
        Command("queue", "", "how many visitors wait", Role.ADVISOR, queue),
        Command(
            "close",
            "",
            "end the chat with this visitor (in the visitor's room)",
            Role.ADVISOR,
            close,
            in_conversation_only=True,
        ),
    ):
        registry.register(command)
