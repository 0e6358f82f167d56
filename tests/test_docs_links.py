"""README.md and docs/*.md: relative links and images resolve to files and GitHub anchors; README <= 250 lines."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.backend_free

README_MAX_LINES = 250


def _repo_root() -> Path:
    """The checkout: the nearest folder above this file that holds pyproject.toml (robust to moving the file)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {__file__}")


ROOT = _repo_root()
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


# An opening or closing code fence: up to 3 spaces (list items indent theirs further, so any indent is accepted),
# then 3 or more backticks or tildes.
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
# A Markdown link or image: [text](target) or ![alt](target); the text may hold one level of brackets (an image
# inside a link) and may run over a line break; the target is the first thing in the parentheses.
_LINK = re.compile(r"!?\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(?P<target><[^>]*>|[^\s)]*)(?:\s+[\"'(][^)]*)?\)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ftp:, //host


def _prose_lines(text: str) -> list[str]:
    """The file's lines with fenced code blocks blanked out (line numbers kept), so nothing inside them counts."""
    lines = text.split("\n")
    out: list[str] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                out.append("")
                continue
            out.append(line)
        else:
            closing = line.strip()
            if closing and set(closing) == {fence[0]} and len(closing) >= len(fence):
                fence = None
            out.append("")
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: rendered text, lower-cased, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links and images -> their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, '_', '-' and ' ' (Unicode-aware)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor the file's headings produce on GitHub (duplicates get -1, -2, ...), plus explicit <a id/name>."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in _prose_lines(text):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group("text"))
            candidate = base
            while candidate in seen:  # github-slugger: count on the original slug until a free one is found
                seen[base] += 1
                candidate = f"{base}-{seen[base]}"
            seen[candidate] = 0
            result.add(candidate)
        result.update(_HTML_ANCHOR.findall(line))
    return result


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code blocks and inline code spans."""
    lines = [_CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line) for line in _prose_lines(text)]
    prose = "\n".join(lines)
    found = []
    for match in _LINK.finditer(prose):
        target = match.group("target").strip("<>")
        line_number = prose.count("\n", 0, match.start("target")) + 1
        found.append((line_number, target))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of page whose file is missing or whose #anchor no heading of the target makes."""
    problems = []
    for line_number, target in links(page.read_text(encoding="utf-8")):
        if not target or _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{line_number}: ({target})"
        if not linked.exists():
            problems.append(f"{where}: no file {linked}")
            continue
        checkable = anchor and linked.suffix.lower() == ".md" and linked.is_file()
        if checkable and unquote(anchor).lower() not in anchors(linked.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading in {linked.relative_to(root)} makes the anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    """Each relative link or image names a file that exists, and each #anchor a heading of that file."""
    assert page.is_file(), f"{page} is missing"
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_at_most_250_lines() -> None:
    """The README stays an overview; detail lives in docs/ (counted as `wc -l` counts)."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, more than {README_MAX_LINES}: move detail to docs/"


def test_readme_links_every_docs_page() -> None:
    """The README's documentation section reaches every page under docs/."""
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README.read_text(encoding="utf-8"))
        if target and not _EXTERNAL.match(target) and not target.startswith("#")
    }
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    unlinked = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"README.md links none of: {', '.join(unlinked)}"


def test_link_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The checker's own rules: GitHub slugs and duplicates, fenced code skipped, missing files and anchors caught."""
    assert slug("Anytime: what 15 and 60 minutes buy on 2 CPU") == "anytime-what-15-and-60-minutes-buy-on-2-cpu"
    assert slug("`harness clean`") == "harness-clean"
    assert slug("A study in optuna-dashboard; older run stores") == "a-study-in-optuna-dashboard-older-run-stores"
    assert anchors("# Tests\n\n## Tests\n\n### Tests\n") == {"tests", "tests-1", "tests-2"}
    assert anchors("```bash\n# not a heading\n```\n# Real\n") == {"real"}

    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## Part two\n")
    page.write_text(
        "# Page\n\n"
        "[fine](other.md) [fine too](other.md#part-two) [here](#page) ![img](other.md) [web](https://example.com)\n"
        "```\n[inside a fence](missing.md)\n```\n"
        "`[in a code span](missing.md)`\n"
        "[no file](missing.md) [no anchor](other.md#part-three) [no local anchor](#nowhere)\n"
        "[over a\nline break](gone.md)\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 4, problems
    assert any("missing.md" in p for p in problems)
    assert any("#part-three" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert any("gone.md" in p for p in problems)
