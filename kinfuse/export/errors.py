"""The two errors export and verify raise; every module of kinfuse.export raises them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import KinfuseError

if TYPE_CHECKING:
    from .verify import VerifyReport


class ExportError(KinfuseError):
    """An export that cannot be made as asked: the message says why and what to do instead."""


class VerifyError(ExportError):
    """An export that does not reproduce the trained model or breaks TGI's file rules."""

    def __init__(self, report: VerifyReport):
        self.report = report
        super().__init__(report.summary())
