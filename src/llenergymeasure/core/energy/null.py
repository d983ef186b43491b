"""NullMeter: stands in where there is nothing to measure, so callers never branch.

Its windows return no measurement, and list each of its scopes as not measured with the
reason it was given. It never reports zero joules.
"""

from __future__ import annotations

from llenergymeasure.core.energy.protocol import WindowBook, WindowReading
from llenergymeasure.domain.energy import NotMeasured, Scope


class NullMeter:
    """Measures nothing, says why: ``scopes`` (given) are reported as not measured."""

    scopes: tuple[Scope, ...] = ()  # it measures none
    per_device = False

    def __init__(self, reason: str, scopes: tuple[Scope, ...] = ("gpu",)) -> None:
        self.name = "null"
        self.reason = reason
        self.not_measured_scopes = scopes
        self._book = WindowBook(self.name)

    def start(self) -> None:
        """Nothing to acquire."""

    def begin_window(self, name: str) -> None:
        """Open window ``name``."""
        self._book.open(name, None)

    def end_window(self, name: str) -> WindowReading:
        """Close window ``name``: every scope is 'not measured' with the reason."""
        self._book.close(name)
        return WindowReading(
            not_measured=[
                NotMeasured(meter=self.name, scope=s, reason=self.reason)
                for s in self.not_measured_scopes
            ]
        )

    def stop(self) -> None:
        """Nothing to release."""
