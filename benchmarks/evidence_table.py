"""The table of `make evidence`: one line per method (loss x label source), from the mean rows of
the three parts' summaries (results/evidence/summary-<part>.json), in markdown.

Columns: accuracies are means over seeds; PGR is the package's one definition
(w2s_scale.metrics.PGR_DEFINITION: the median over seeds of each transfer run against the seed-mean
weak and ceiling accuracies) with its 95% two-level bootstrap interval (the summary's `pgr`,
`pgr_lo`, `pgr_hi`); vs direct is the mean over seeds of each seed's PGR minus direct xent
transfer's, with its 95% t-interval. n seeds: the seeds whose runs finished (the summary reads only
runs finished with the config's settings).

    python benchmarks/evidence_table.py [results/evidence]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PARTS = ("losses", "labels", "early_stopping")


def _f(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def rows(folder: Path) -> list[dict]:
    seen, out = set(), []
    for part in PARTS:
        path = folder / f"summary-{part}.json"
        if not path.exists():
            continue
        for row in json.loads(path.read_text()):
            if part == "early_stopping":  # its runs keep the loss's name; the setting is the method
                row = {**row, "loss": f"{row['loss']} + early stopping"}
            key = (row["loss"], row.get("labels", "weak"))
            if row["seed"] == "mean" and key not in seen:
                seen.add(key)
                out.append(row)
    return out


def table(found: list[dict]) -> str:
    lines = ["| method (loss, labels) | n seeds | weak | ceiling | transfer | PGR [95% bootstrap] "
             "| AUC-PGR | misfit | vs direct xent [95%] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        interval = f" [{_f(r['pgr_lo'], 2)}, {_f(r['pgr_hi'], 2)}]" if r.get("pgr_lo") is not None else ""
        direct = ""
        if r.get("pgr_vs_direct") is not None:
            ci = r.get("pgr_vs_direct_ci95")
            direct = f"{r['pgr_vs_direct']:+.2f}" + (f" [{r['pgr_vs_direct'] - ci:+.2f}, "
                                                     f"{r['pgr_vs_direct'] + ci:+.2f}]" if ci is not None else "")
        # a label source's runs are named <loss>+<source> already
        method = r["loss"] if "+" in r["loss"] else f"{r['loss']}, {r.get('labels', 'weak')}"
        lines.append(f"| {method} | {r['n_seeds']} | {_f(r['weak_acc'])} "
                     f"| {_f(r['ceiling_acc'])} | {_f(r['transfer_acc'])} | {_f(r['pgr'], 2)}{interval} "
                     f"| {_f(r.get('pgr_auc'), 2)} | {_f(r.get('misfit'))} "
                     f"| {direct} |")
    return "\n".join(lines)


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/evidence")
    found = rows(folder)
    if not found:
        print(f"no summaries under {folder} (summary-<part>.json); run `make evidence` first",
              file=sys.stderr)
        return 1
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
