"""The directory as a whole: ``!find`` and ``!directory`` for every advisor (who is available
where), and the admins' ``!directory repair``, which brings the groups' spaces back in step
with the database (the same reconciliation as at start-up)."""

from __future__ import annotations

from bridge.model import AdvisorMxid
from bridge.services.directory import AdvisorEntry, Availability, DirectoryService, GroupEntry
from bridge.services.space_repair import SpaceRepair

from .registry import Command, CommandContext, CommandRegistry, Role, UsageError

# ● marks what the public would be shown (presence online and !available), ○ everything else
SHOWN, HIDDEN = "●", "○"


def _viewer(ctx: CommandContext) -> AdvisorMxid | None:
    """Whose view: an admin sees the whole directory, an advisor perhaps only their isolated
    group (an admin who is also an advisor sees everything too)."""
    return None if ctx.role >= Role.ADMIN else AdvisorMxid(ctx.sender)


def _group_line(entry: GroupEntry, indent: bool) -> str:
    mark = SHOWN if entry.available else HIDDEN
    pad = "  " * entry.depth if indent else ""
    return (
        f"{pad}{mark} {entry.path} — {entry.group.name}: "
        f"{entry.available} of {entry.members} available"
    )


def _advisor_line(entry: AdvisorEntry) -> str:
    mark = SHOWN if entry.availability is Availability.AVAILABLE else HIDDEN
    advisor = entry.advisor
    name = f" ({advisor.display_name})" if advisor.display_name else ""
    return f"{mark} {advisor.mxid}{name} — {entry.availability.value}"


def _scoped(scope: str | None) -> str:
    return f" (your group {scope} is isolated: only it is listed)" if scope else ""


def register(registry: CommandRegistry, repair: SpaceRepair, directory: DirectoryService) -> None:
    async def find(ctx: CommandContext) -> None:
        query = " ".join(ctx.args)
        if not query.strip():
            raise UsageError("Say what to look for.")
        found = await directory.find(query, _viewer(ctx))
        if not found.groups and not found.advisors and not found.call_signs:
            await ctx.reply(f"Nothing matches {query!r}{_scoped(found.scope)}.")
            return
        lines = [f"Found for {query!r}{_scoped(found.scope)} (● shown to visitors now):"]
        if found.groups:
            lines.append("Groups:")
            lines += [_group_line(e, indent=False) for e in found.groups]
        if found.advisors:
            lines.append("Advisors:")
            lines += [_advisor_line(e) for e in found.advisors]
        if found.call_signs:
            lines.append("Call signs:")
            lines += [
                f"{SHOWN if e.reachable else HIDDEN} {e.call_sign.sign} → {e.target} ({e.name})"
                + (f" — {e.call_sign.keywords}" if e.call_sign.keywords else "")
                for e in found.call_signs
            ]
        await ctx.reply("\n".join(lines))

    async def listing(ctx: CommandContext) -> None:
        entries, scope = await directory.tree(_viewer(ctx))
        lines = [f"Directory{_scoped(scope)} (● someone is available now):"]
        lines += [_group_line(e, indent=True) for e in entries]
        await ctx.reply("\n".join(lines))

    async def directory_(ctx: CommandContext) -> None:
        if not ctx.args:
            await listing(ctx)
            return
        if [a.lower() for a in ctx.args] != ["repair"]:
            raise UsageError()
        if ctx.role < Role.ADMIN:
            await ctx.reply("Only admins can run !directory repair.")
            return
        report = await repair.reconcile()
        if report.clean:
            await ctx.reply(report.summary())
        else:
            await ctx.reply(report.summary() + "\nThe repairs run now.")

    registry.register(
        Command(
            "find",
            "<keyword…>",
            "the groups, advisors and call signs matching every keyword (accents and case "
            "don't matter), with who is available",
            Role.ADVISOR,
            find,
        )
    )
    registry.register(
        Command(
            "directory",
            "[repair]",
            "the group tree with how many are available in each; repair (admins): bring the "
            "groups' spaces back in step (a space deleted or left by hand, a link or a member "
            "removed)",
            Role.ADVISOR,
            directory_,
        )
    )
