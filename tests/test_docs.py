"""The docs say what the code does: the generated options table, the README's example, links."""
import re
from pathlib import Path

from conftest import ROOT
from pymakemore import config

DOCS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_options_table_is_the_parsers():
    text = (ROOT / "docs" / "training.md").read_text()
    start = text.index("<!-- options table")
    table = text[text.index("\n", start) + 1:text.index("<!-- end of options table -->")]
    assert table == config.options_table(), "regenerate it: python -m pymakemore.config"


def test_the_readme_example_runs_as_written():
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## Use the ops in your own model\n\n```python\n(.*?)```", text,
                        re.S).group(1)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["loss"].ndim == 0 and scope["W2"].grad is not None
    code = "\n".join(line.split("#")[0] for line in example.splitlines())
    assert "F." not in code  # every op of the example is pymakemore's, the head included


def test_every_relative_link_points_at_a_file():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_the_source_files_the_docs_name_exist():
    tracked = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and "build" not in p.parts
               and ".git" not in p.parts]
    names = {p.name for p in tracked}
    for doc in DOCS:
        for path in re.findall(r"`([A-Za-z0-9_./-]+\.(?:py|h|cpp|cu|inc|sh))`", doc.read_text()):
            if path.startswith("../"):
                continue  # outside the repository (the shared data)
            found = (ROOT / path).exists() if "/" in path else path in names
            assert found, f"{doc.name} names {path}, which does not exist"


def test_the_ops_doc_lists_every_custom_op():
    schemas = set(re.findall(r'm\.def\("([a-z_]+)\(', (ROOT / "csrc/torch/schema.cpp").read_text()))
    text = " ".join((ROOT / "docs" / "ops.md").read_text().split())
    listed = set()
    for group in re.findall(r"torch\.ops\.pymakemore\.\{([^}]*)\}", text):
        listed |= {name.strip() for name in group.split(",")}
    backwards = {name for name in schemas if name.endswith("_backward")}
    assert {name[:-len("_backward")] for name in backwards} <= listed
    named = {name for name in schemas - backwards if f"`{name}`" in text}
    assert schemas - backwards - listed - named == set(), "docs/ops.md misses these ops"


SOURCE_SUFFIXES = {".py", ".h", ".cpp", ".cu", ".inc", ".sh", ".md", ".txt", ".cmake"}


def _tracked_text_files():
    import subprocess
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    return [ROOT / n for n in names
            if (ROOT / n).is_file() and (Path(n).suffix in SOURCE_SUFFIXES
                                         or Path(n).name in ("Makefile", "run", "CMakeLists.txt"))]


def test_the_paths_named_in_source_comments_and_docs_exist():
    # a path like csrc/cpu/this_level.h in any tracked file, from the repository root, the
    # include directory or the naming file's own folder
    pattern = re.compile(r"(?<![\w./-])((?:csrc|pymakemore|bench|tests|docs|\.ci)/"
                         r"[\w./-]*\w\.(?:py|h|cpp|cu|inc|sh|md|txt|json))")
    missing = []
    for path in _tracked_text_files():
        for name in pattern.findall(path.read_text(errors="ignore")):
            bases = (ROOT, ROOT / "csrc" / "include", path.parent)
            if not any((base / name).exists() for base in bases):
                missing.append(f"{path.relative_to(ROOT)} names {name}")
    assert missing == []


def _headings(doc):
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines()
            if line.startswith("#")]


def test_the_sections_that_text_refers_to_exist():
    # README "Status", docs/gpu.md's "The GPU path": the named document has such a heading
    docs = {"README": ROOT / "README.md", "DEVELOPERS": ROOT / "DEVELOPERS.md"}
    docs.update({f"docs/{p.name}": p for p in (ROOT / "docs").glob("*.md")})
    docs["bench/RESULTS.md"] = ROOT / "bench" / "RESULTS.md"
    names = "|".join(re.escape(n) for n in sorted(docs, key=len, reverse=True))
    pattern = re.compile(rf"\b({names})(?:\.md)?(?:'s)?,? \"([^\"\n]+)\"")
    found = []
    for path in _tracked_text_files():
        for doc, section in pattern.findall(path.read_text(errors="ignore")):
            found.append((path, doc, section))
            assert any(section in h for h in _headings(docs[doc])), \
                f"{path.relative_to(ROOT)} refers to {doc} \"{section}\", which has no such heading"
    for doc in DOCS:  # links with an anchor: the anchor is a heading of the target
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]+)\)", doc.read_text()):
            linked = (doc.parent / target) if target else doc
            slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
                     for h in _headings(linked)}
            assert anchor in slugs, f"{doc.name}: #{anchor} is not a heading of {linked.name}"
