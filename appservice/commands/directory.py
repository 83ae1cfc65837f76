"""Admin commands for the directory as a whole; for now ``!directory repair``, which brings the
groups' spaces back in step with the database (the same reconciliation as at start-up)."""

from __future__ import annotations

from bridge.services.space_repair import SpaceRepair

from .registry import Command, CommandContext, CommandRegistry, Role, UsageError


def register(registry: CommandRegistry, repair: SpaceRepair) -> None:
    async def directory(ctx: CommandContext) -> None:
        if [a.lower() for a in ctx.args] != ["repair"]:
            raise UsageError()
        report = await repair.reconcile()
        if report.clean:
            await ctx.reply(report.summary())
        else:
            await ctx.reply(report.summary() + "\nThe repairs run now.")

    registry.register(
        Command(
            "directory",
            "repair",
            "bring the groups' spaces back in step (a space deleted or left by hand, a link "
            "or a member removed)",
            Role.ADMIN,
            directory,
        )
    )
