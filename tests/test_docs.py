"""The documentation stays true: the config reference matches the code, every relative link
and anchor in README.md and docs/*.md leads somewhere, and the README stays a front door."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from w2s_scale import config_docs

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_BYTES = 12_500

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
# [text](target) and ![alt](target), with an optional "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text outside fenced blocks and code spans (links and headings live there)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    # GitHub's rule: the rendered text lowercased, punctuation dropped (word characters,
    # hyphens and spaces stay), spaces become hyphens
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base, n = slug(heading), 0
        while (f"{base}-{n}" if n else base) in found:  # repeats get -1, -2, ...
            n += 1
        found.add(f"{base}-{n}" if n else base)
    return found


def test_configuration_md_is_generated_from_the_code():
    page = REPO / "docs" / "configuration.md"
    assert page.exists(), "docs/configuration.md is missing; run `make docs`"
    assert page.read_text(encoding="utf-8") == config_docs.render(), (
        "docs/configuration.md differs from the models and comments in w2s_scale/config.py; "
        "run `make docs` and commit the result")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if REPO in dest.parents else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with the anchor #{anchor} in "
                          f"{dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_readme_is_a_front_door():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size:,} bytes, over {README_MAX_BYTES:,}; move the detail into docs/ "
        f"and link to it")


def test_slug_follows_github():
    assert slug("3. Run it") == "3-run-it"
    assert slug("K classes: `configs/demo_bbc_news.yaml`") == "k-classes-configsdemo_bbc_newsyaml"
    assert slug("On paper: a 72B strong student") == "on-paper-a-72b-strong-student"
