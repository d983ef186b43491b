"""Value types shared by the dataset loaders."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """One request to send to the model.

    ``target_output_tokens`` is the number of new tokens to generate when the dataset fixes
    it (synthetic datasets); ``None`` leaves it to ``max_output_tokens`` of the config.
    ``cut`` marks a text already shortened before tokenising (`loader.cap_prompt_chars`):
    it counts as truncated to ``max_input_tokens`` whatever its token count.
    """

    id: str
    text: str
    task: str | None = None
    target_output_tokens: int | None = None
    cut: bool = False


class PromptList(list[Prompt]):
    """A ``list[Prompt]`` that also records where the prompts came from and how they were
    drawn (so results can report it): ``source``, ``n_available`` (distinct prompts in the
    source), ``cycled`` (some prompts repeat because more were asked for than exist) and
    ``notes`` (human-readable remarks such as skipped empty rows); ``cache`` says whether a
    study's prompt cache served them (``hit``), stored them (``miss``) or could not be used
    (``off``); None when no cache was asked for."""

    def __init__(
        self,
        prompts: list[Prompt],
        source: str,
        n_available: int,
        cycled: bool = False,
        notes: list[str] | None = None,
        cache: str | None = None,
    ) -> None:
        super().__init__(prompts)
        self.source = source
        self.n_available = n_available
        self.cycled = cycled
        self.notes: list[str] = list(notes or [])
        self.cache = cache

    def summary(self) -> dict[str, object]:
        """Provenance of this prompt list as a plain dict (for result metadata)."""
        summary: dict[str, object] = {
            "source": self.source,
            "n": len(self),
            "n_available": self.n_available,
            "cycled": self.cycled,
            "notes": list(self.notes),
        }
        if self.cache is not None:
            summary["cache"] = self.cache
        return summary


__all__ = ["Prompt", "PromptList"]
