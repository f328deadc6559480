"""tuner.files: study names become file names only through `study_slug`."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_fixtures import make_study, sqlite_url
from typer.testing import CliRunner

from tuner.cli import app
from tuner.files import SLUG_MAX_CHARS, study_slug

HOSTILE_NAMES = [
    "../../etc/x",
    "/etc/passwd",
    "..",
    ".",
    "",
    ".hidden",
    "-rf",
    "a\\b",
    "a\nb",
    "a\x00b",
    "C:\\Windows",
    "ümlaut study",
    "x" * 1000,
    "名前",
]


@pytest.mark.parametrize("name", ["digits-quick", "fashion_mnist.v2", "A1", "_x"])
def test_a_safe_name_is_its_own_slug(name: str) -> None:
    assert study_slug(name) == name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_any_name_becomes_one_harmless_path_component(name: str, tmp_path: Path) -> None:
    slug = study_slug(name)
    assert slug == study_slug(name)  # stable
    assert "/" not in slug and "\\" not in slug and "\x00" not in slug
    assert slug.isascii() and slug.isprintable()
    assert not slug.startswith((".", "-"))
    assert len(slug) <= SLUG_MAX_CHARS + 9
    assert (tmp_path / slug).parent == tmp_path
    (tmp_path / f"report-{slug}.html").write_text("ok")  # a valid file name on this system


def test_distinct_names_get_distinct_slugs() -> None:
    names = [*HOSTILE_NAMES, "a/b", "a-b", "a b", "a_b", "a//b", "x" * 1001]
    # A safe name that looks like another name's slug stays distinct too.
    names.append(study_slug("a/b").replace("~", "-"))
    slugs = [study_slug(name) for name in names]
    assert len(set(slugs)) == len(names)


def test_report_of_a_study_named_like_a_path_stays_in_the_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    url = sqlite_url(tmp_path)
    name = "../../etc/x"
    make_study(2, name=name, storage=url)
    result = CliRunner().invoke(app, ["report", "--study", name, "--storage", url])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in work.iterdir()) == [f"report-{study_slug(name)}.html"]
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.html")] == [
        Path("a", "b", f"report-{study_slug(name)}.html")
    ]
