"""Admin commands for the advisor groups: the tree (each group a Matrix space) and who
belongs to which group."""

from __future__ import annotations

from bridge.groups import Role as MemberRole
from bridge.services.groups import GroupService, parse_role

from .registry import Command, CommandContext, CommandRegistry, Role, UsageError

USAGE = (
    "create <path> [display name] | rename <path> <display name> | move <path> <new parent> | "
    "delete <path> | list | add <path> <@user:server> [primary|secondary] | "
    "remove <path> <@user:server> | isolate <path> on|off"
)


def register(registry: CommandRegistry, groups: GroupService) -> None:
    async def list_(ctx: CommandContext) -> None:
        lines = []
        for line in await groups.tree():
            primary = [m.advisor for m in line.members if m.role is MemberRole.PRIMARY]
            secondary = [m.advisor for m in line.members if m.role is MemberRole.SECONDARY]
            who = ", ".join([*primary, *(f"{a} (secondary)" for a in secondary)]) or "nobody"
            isolated = " (isolated)" if line.group.isolated else ""
            lines.append(f"{'  ' * line.depth}{line.path} — {line.group.name}{isolated}: {who}")
        await ctx.reply("Groups (path — name: members):\n" + "\n".join(lines))

    async def group(ctx: CommandContext) -> None:
        if not ctx.args:
            raise UsageError()
        action, rest = ctx.args[0].lower(), ctx.args[1:]
        if action == "list":
            await list_(ctx)
        elif action == "create" and rest:
            made = await groups.create(rest[0], " ".join(rest[1:]) or None)
            await ctx.reply(
                f"Group {rest[0].strip('/')} ({made.name}) created; its space follows. Add "
                f"advisors with !group add {rest[0].strip('/')} @user:server."
            )
        elif action == "rename" and len(rest) >= 2:
            renamed = await groups.rename(rest[0], " ".join(rest[1:]))
            await ctx.reply(f"Group {rest[0].strip('/')} is now called {renamed.name}.")
        elif action == "move" and len(rest) == 2:
            path = await groups.move(rest[0], rest[1])
            await ctx.reply(f"Group {rest[0].strip('/')} moved; it is now {path}.")
        elif action == "delete" and len(rest) == 1:
            await groups.delete(rest[0])
            await ctx.reply(f"Group {rest[0].strip('/')} deleted.")
        elif action == "add" and len(rest) in (2, 3):
            role = parse_role(rest[2] if len(rest) == 3 else None)
            changed = await groups.add_member(rest[0], rest[1], role)
            where = rest[0].strip("/") or "/"
            if changed:
                await ctx.reply(f"{rest[1]} is now in {where} ({role.value}).")
            else:
                await ctx.reply(f"{rest[1]} was in {where} ({role.value}) already.")
        elif action == "remove" and len(rest) == 2:
            await groups.remove_member(rest[0], rest[1])
            await ctx.reply(f"{rest[1]} is no longer in {rest[0].strip('/') or '/'}.")
        elif action == "isolate" and len(rest) == 2 and rest[1].lower() in ("on", "off"):
            isolated = rest[1].lower() == "on"
            changed = await groups.isolate(rest[0], isolated)
            where = rest[0].strip("/") or "/"
            if not isolated:
                state = "is no longer isolated"
            else:
                state = "is isolated: its primary members get only its visitors"
            await ctx.reply(f"{where} {state}{'' if changed else ' (it was already)'}.")
        else:
            raise UsageError()

    registry.register(
        Command(
            "group",
            USAGE,
            "the advisor groups (paths like support/billing; / is the root, all advisors)",
            Role.ADMIN,
            group,
        )
    )
