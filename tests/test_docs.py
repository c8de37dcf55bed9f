"""The docs say what the code does: the generated options table, the README's example, links."""
import re

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
