"""Admin commands for call signs: short public names (``billing-es``) that reach an advisor or
a group, each a Matrix alias (a knock-only lobby) and a user anyone can open a direct chat
with, found by their keywords."""

from __future__ import annotations

from bridge.model import RoomId
from bridge.ports import MatrixGateway
from bridge.services.callsigns import CallSignLine, CallSignService

from .registry import Command, CommandContext, CommandRegistry, Role, UsageError

USAGE = (
    "set <sign> <@user:server | group <path>> [keywords…] | keywords <sign> <keywords…> | "
    "publish <sign> on|off | remove <sign> | list"
)


def register(
    registry: CommandRegistry, call_signs: CallSignService, gateway: MatrixGateway
) -> None:
    def ways(sign: str) -> str:
        alias, user = gateway.call_sign_address(sign)
        return f"knock on {alias}, or a direct chat with {user}"

    def line(entry: CallSignLine) -> str:
        c = entry.call_sign
        mark = "●" if entry.reachable else "○"
        words = f" — keywords: {c.keywords}" if c.keywords else ""
        listed = " (in the public room directory)" if c.listed else ""
        return f"{mark} {c.sign} → {entry.target} ({entry.name}){listed}{words}"

    async def call_sign(ctx: CommandContext) -> None:
        if not ctx.args:
            raise UsageError()
        action, rest = ctx.args[0].lower(), ctx.args[1:]
        if action == "list" and not rest:
            lines = await call_signs.lines()
            if not lines:
                await ctx.reply("No call signs yet; !callsign set <sign> @user:server makes one.")
                return
            text = "Call signs (● someone behind it is shown to the public now):\n"
            await ctx.reply(text + "\n".join(line(e) for e in lines))
        elif action == "set" and len(rest) >= 2:
            sign, target = rest[0], rest[1]
            words = rest[2:]
            if target.lower() == "group":
                if len(rest) < 3:
                    raise UsageError()
                target, words = f"group {rest[2]}", rest[3:]
            made, new = await call_signs.set(sign, target, " ".join(words))
            reaches = made.advisor or target
            if new:
                await ctx.reply(
                    f"Call sign {made.sign} now reaches {reaches}: {ways(made.sign)}. "
                    f"!callsign publish {made.sign} on lists it in the public room directory."
                )
            else:
                await ctx.reply(f"Call sign {made.sign} now reaches {reaches}.")
        elif action == "keywords" and len(rest) >= 1:
            changed = await call_signs.set_keywords(rest[0], " ".join(rest[1:]))
            shown = changed.keywords or "(none)"
            await ctx.reply(f"Keywords of {changed.sign}: {shown}.")
        elif action == "publish" and len(rest) == 2 and rest[1].lower() in ("on", "off"):
            listed = rest[1].lower() == "on"
            changed = await call_signs.set_listed(rest[0], listed, RoomId(ctx.room_id))
            where = "is listed in" if listed else "is no longer listed in"
            await ctx.reply(f"Call sign {changed.sign} {where} the public room directory.")
        elif action == "remove" and len(rest) == 1:
            await call_signs.remove(rest[0])
            await ctx.reply(
                f"Call sign {rest[0]} removed; its alias goes. Conversations it opened stay open."
            )
        else:
            raise UsageError()

    registry.register(
        Command(
            "callsign",
            USAGE,
            "call signs: public names that reach an advisor or a group privately (a Matrix "
            "alias to knock on, and a user to open a direct chat with), found by keyword",
            Role.ADMIN,
            call_sign,
        )
    )
