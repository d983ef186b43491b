#!/usr/bin/env python3
"""Length statistics of the built-in prompt set, in characters and in tokens.

Prints the Markdown tables used in docs/datasets.md: task mix, length in characters and in
offline-tokenizer tokens (mean, p50, p90, min, max; tokens counted without the ``<|bos|>``
the tokenizer prepends), and the characters-per-token ratio.

    python scripts/dataset_stats.py [--also FILE ...]   # chars/token of other texts too
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer
from llenergymeasure.datasets.loader import load_builtin


def percentile(values: list[int], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, frac = int(pos), pos - int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


def stats_row(label: str, values: list[int]) -> str:
    """One Markdown table row: label, mean, p50, p90, min, max."""
    cells = [
        f"{statistics.mean(values):.1f}",
        f"{percentile(values, 50):.0f}",
        f"{percentile(values, 90):.0f}",
        str(min(values)),
        str(max(values)),
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    """Compute and print the statistics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="other text files")
    args = parser.parse_args()
    prompts = load_builtin()
    tok = load_offline_tokenizer()
    chars = [len(p.text) for p in prompts]
    tokens = [len(tok(p.text, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(f"prompts: {len(prompts)}\n")
    print("| task | prompts | share |\n|---|---|---|")
    for task, count in Counter(p.task for p in prompts).most_common():
        print(f"| {task} | {count} | {100 * count / len(prompts):.1f}% |")
    print("\n| length | mean | p50 | p90 | min | max |\n|---|---|---|---|---|---|")
    print(stats_row("characters", chars))
    print(stats_row("tokens (offline BPE)", tokens))
    print(f"\nchars/token over the whole set: {sum(chars) / sum(tokens):.2f}")
    ratios = [c / t for c, t in zip(chars, tokens, strict=True)]
    print(
        f"chars/token per prompt: mean {statistics.mean(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    )
    for path in args.also:
        text = path.read_text(encoding="utf-8")
        n_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
        print(f"chars/token of {path.name}: {len(text) / n_tokens:.2f}")


if __name__ == "__main__":
    main()
