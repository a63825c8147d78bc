"""The documentation speaks of the product: no text about how or where it was built, CPU model names
only in the header line of the benchmark table they belong to, and no relative link that leads
nowhere. (Every ``apps/...`` command line in README.md and docs/ is checked in test_app_cli.py.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("README.md", "docs", "packages", "apps", "benchmarks", "tests", ".ci")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".js", ".html", ".css", ".cfg", ".ini", ".yml", ".yaml", ".sh", ""}
SKIPPED_DIRS = {"__pycache__", ".venv", "node_modules", ".pytest_cache", ".ruff_cache"}

# Bracketed letters keep this file from matching its own patterns in a plain grep.
OFF_SUBJECT = re.compile(
    r"sess[i]on|issu[e] #|this mach[i]ne|this [c]pu|measured [h]ere|other [j]obs|idle [m]achine|DESIGN\.md|[x]eon|[e]pyc",
    re.IGNORECASE)
CPU_NAMES = re.compile(r"[x]eon|[e]pyc", re.IGNORECASE)
ALLOWED = ('scope="session"',)  # pytest's fixture scope


def text_files():
    for name in SCANNED:
        path = ROOT / name
        paths = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in paths:
            if (file.is_file() and file.suffix in TEXT_SUFFIXES and file != Path(__file__).resolve()
                    and not SKIPPED_DIRS.intersection(file.relative_to(ROOT).parts)):
                yield file


def is_table_header(lines: list[str], index: int) -> bool:
    """A line ending in ':' whose next non-blank line starts a Markdown table."""
    following = [line for line in lines[index + 1:index + 3] if line.strip()]
    return lines[index].rstrip().endswith(":") and bool(following) and following[0].startswith("|")


def off_subject_lines(path: Path, root: Path = ROOT) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return []
    hits = []
    for index, line in enumerate(lines):
        text = line
        for allowed in ALLOWED:
            text = text.replace(allowed, "")
        found = OFF_SUBJECT.findall(text)
        if not found:
            continue
        cpu_names_only = all(CPU_NAMES.fullmatch(hit) for hit in found)
        if cpu_names_only and path.suffix == ".md" and len(found) == 1 and is_table_header(lines, index):
            continue
        hits.append(f"{path.relative_to(root)}:{index + 1}: {line.strip()}")
    return hits


def test_no_text_outside_the_projects_subject():
    hits = [hit for path in text_files() for hit in off_subject_lines(path)]
    assert not hits, "text about how or where the project was built:\n" + "\n".join(hits)


def test_the_off_subject_check_sees_a_hit_and_allows_a_table_header(tmp_path):
    page = tmp_path / "page.md"
    cpu, place = "EP" + "YC", "idle " + "machine"
    page.write_text(f"2 cores of an AMD {cpu}, torch 2.15:\n\n| a |\n|---|\n\nOn the {place} the {cpu} ran it.\n"
                    '@pytest.fixture(scope="session")\n')
    assert off_subject_lines(page, tmp_path) == [f"page.md:6: On the {place} the {cpu} ran it."]


FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    headings = re.findall(r"^#+\s+(.*)$", FENCED.sub("", markdown), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(re.sub(r"`[^`\n]*`", "", FENCED.sub("", text))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{path.relative_to(root)}: {target} (no such heading)")
    return broken


def test_every_relative_link_in_readme_and_docs_leads_somewhere():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [link for page in pages for link in broken_links(page)]
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Speed (`x.py`)\n")
    page = tmp_path / "page.md"
    page.write_text("[a](other.md#speed-xpy) [b](missing.md) [c](other.md#nope) [d](https://example.org)\n"
                    "```\n[e](in-a-code-block.md)\n```\n")
    assert broken_links(page, tmp_path) == ["page.md: missing.md (no such file)",
                                            "page.md: other.md#nope (no such heading)"]
