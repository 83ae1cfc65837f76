"""The bot's commands: one registry, one module per group of commands."""

from .registry import Command, CommandContext, CommandRegistry, Role

__all__ = ["Command", "CommandContext", "CommandRegistry", "Role"]
