"""The README and docs/: links that resolve, a short README that links every page, no history
of benchmark rounds.

Every app setting is documented in docs/settings.md, which tests/project/test_settings_doc.py checks
is what shared/settings_doc writes from the declarations (a row per declared setting, the
telemetry ones included), so this module no longer looks for setting names. The request
examples are run by tests/e2e/test_docs_examples.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# Pages other people are writing at the same time as the docs split: a link to one of them is
# accepted while the page does not exist yet (once it does, its anchors are checked like any).
# Drop this set once they have all landed.
BEING_WRITTEN = {"docs/batch-data.md", "docs/latency-check.md", "docs/model-files.md",
                 "docs/local-host.md"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def prose(text: str) -> str:
    """The text without fenced blocks and code spans (a link inside code is not a link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    text = prose(path.read_text(encoding="utf-8"))
    return LINK.findall(text) + REFERENCE.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, every character but letters,
    digits, spaces, '-' and '_' removed, spaces made '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for _, heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}: ({target})"
        try:
            name = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            broken.append(f"{where} points outside the repository")
            continue
        if not resolved.exists():
            if name not in BEING_WRITTEN:
                broken.append(f"{where}: no file {name}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where}: no heading or anchor #{anchor} in {name}")
    return broken


def test_every_relative_link_resolves():
    assert [problem for page in PAGES for problem in broken_links(page)] == []


def test_the_link_checker_reads_links_as_github_does():
    assert slug('Names with "/"') == "names-with-"
    assert slug("Routing (A/B, canary, shadow)") == "routing-ab-canary-shadow"
    assert slug("A crashed worker's message: how long") == "a-crashed-workers-message-how-long"
    assert slug("The `jobs` command") == "the-jobs-command"
    assert links_of("see [a](x.md#y), `[b](code.md)`, ![c](img.png) and\n[d]: ../e.md\n") \
        == ["x.md#y", "img.png", "../e.md"]
    assert links_of("```sh\n[a](inside-a-fence.md)\n```\n") == []


def links_of(text: str) -> list[str]:
    prose_text = prose(text)
    return LINK.findall(prose_text) + REFERENCE.findall(prose_text)


def test_the_readme_is_short_and_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    index = DOCS / "README.md"
    linked_from_index = {(DOCS / target.partition("#")[0]).resolve() for target in links(index)}
    pages = set(DOCS.glob("*.md")) - {index}
    assert sorted(p.name for p in pages - linked) == []
    assert sorted(p.name for p in pages - linked_from_index) == []
    assert index.resolve() in linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_history_of_benchmark_rounds(page):
    text = page.read_text(encoding="utf-8").lower()
    for phrase in ("this round", "previous round", "earlier round", "for the record",
                   "two rounds of work ago", "before that"):
        assert phrase not in text, f"{page.relative_to(ROOT)} tells the history of rounds ({phrase!r})"


def test_the_documented_two_commands_exist():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    text = README.read_text(encoding="utf-8")
    for command in ("make demo", "make test"):
        assert command in text
        assert re.search(rf"^{command.split()[1]}:", makefile, re.M)
