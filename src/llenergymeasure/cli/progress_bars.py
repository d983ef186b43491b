"""The CLI's `Progress` implementation: tqdm bars and short status lines on stderr.

Bars are drawn only on a terminal (tqdm's ``disable=None``), so logs and pipes get plain
lines instead of carriage-return noise. ``quiet`` silences everything but the final table.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from llenergymeasure.progress import ExperimentTick


def format_eta(eta_s: float | None) -> str:
    """``ETA 1h02m``/``ETA 3m05s``/``ETA 12s``; empty when unknown."""
    if eta_s is None or eta_s < 0:
        return ""
    total = round(eta_s)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"ETA {hours}h{minutes:02d}m"
    return f"ETA {minutes}m{seconds:02d}s" if minutes else f"ETA {seconds}s"


def tick_text(tick: ExperimentTick) -> str:
    """``experiment i/N, cycle c/C, <label>, ETA ...``."""
    parts = [
        f"experiment {tick.index}/{tick.total}",
        f"cycle {tick.cycle}/{tick.n_cycles}",
        tick.label,
        format_eta(tick.eta_s),
    ]
    return ", ".join(p for p in parts if p)


class CliProgress:
    """Draws library progress on stderr (implements `llenergymeasure.progress.Progress`)."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self._prompt_bar: Any = None
        self._study_bar: Any = None

    def _bar(self, total: int, desc: str, position: int) -> Any:
        """A tqdm bar on our stream (disabled when quiet or not a terminal)."""
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=desc,
            file=self.stream,
            disable=True if self.quiet else None,
            leave=False,
            position=position,
            dynamic_ncols=True,
        )

    def _write(self, text: str) -> None:
        """One status line that does not tear an active bar."""
        if self.quiet:
            return
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def _close_prompt_bar(self) -> None:
        if self._prompt_bar is not None:
            self._prompt_bar.close()
            self._prompt_bar = None

    def stage(self, name: str) -> None:
        """A new stage of the current experiment: one line, and the prompt bar ends."""
        self._close_prompt_bar()
        self._write(f"  {name}")

    def prompts_done(self, done: int, total: int) -> None:
        """Advance the prompts bar (created on first call)."""
        try:
            if self._prompt_bar is None or self._prompt_bar.total != total:
                self._close_prompt_bar()
                position = 1 if self._study_bar is not None else 0
                self._prompt_bar = self._bar(total, "prompts", position)
            self._prompt_bar.n = min(done, total)
            self._prompt_bar.refresh()
        except Exception:  # progress must never break a measurement
            self._prompt_bar = None

    def experiment_started(self, tick: ExperimentTick) -> None:
        """A study experiment began: a line, and the study bar's description."""
        self._close_prompt_bar()
        if self._study_bar is None:
            self._study_bar = self._bar(tick.total, "study", 0)
        self._study_bar.set_description_str(tick_text(tick), refresh=True)
        self._write(tick_text(tick))

    def experiment_finished(self, tick: ExperimentTick, status: str, detail: str = "") -> None:
        """A study experiment ended: advance the study bar and say how it went."""
        self._close_prompt_bar()
        if self._study_bar is not None:
            self._study_bar.update(1)
        suffix = f": {detail}" if detail else ""
        self._write(f"  -> {status}{suffix}")

    def message(self, text: str) -> None:
        """An informational line."""
        self._write(text)

    def close(self) -> None:
        """Remove every bar (call at the end of a run, also on errors)."""
        self._close_prompt_bar()
        if self._study_bar is not None:
            self._study_bar.close()
            self._study_bar = None
