"""make report's page opens with the results and draws its charts with no network (Vega inlined from
pinned npm tarballs)."""

from __future__ import annotations

import base64
import io
import re
import tarfile
from pathlib import Path

import pytest
from dvc_render.vega import VegaRenderer

from mathpipe.errors import DataError, PipelineError
from mathpipe.evaluation.report_page import (
    BUNDLES,
    Bundle,
    integrity_of,
    offline_template,
    page_sections,
    script_from_tarball,
    write_template,
)
from tests.browser import charts_drawn, needs_chromium, needs_npm
from tests.checkout import run


def tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_pinned_bundles_are_the_versions_dvc_renders_page_asks_for():
    asked = dict(re.findall(r"npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert {b.package: b.version for b in BUNDLES} == asked


def test_a_tarball_is_used_only_when_it_is_the_pinned_one():
    good = tarball({"package/build/x.min.js": "var x = 1;"})
    bundle = Bundle("x", "1.0.0", "package/build/x.min.js", integrity_of(good))
    assert script_from_tarball(bundle, good) == "var x = 1;"
    other = tarball({"package/build/x.min.js": "var x = 2;"})
    with pytest.raises(PipelineError, match=r"x@1\.0\.0: .*not the pinned"):
        script_from_tarball(bundle, other)


@pytest.mark.parametrize("files, problem", [
    ({"package/other.js": "var x;"}, "has no package/build/x.min.js"),
    ({"package/build/x.min.js": "s='</script>'"}, "cannot be inlined"),
    ({"package/build/x.min.js": "s='{plot_divs}'"}, "cannot be inlined"),
])
def test_a_bundle_that_cannot_go_in_the_page_is_named(files, problem):
    data = tarball(files)
    with pytest.raises(PipelineError, match=problem):
        script_from_tarball(Bundle("x", "1.0.0", "package/build/x.min.js", integrity_of(data)), data)


def test_the_template_holds_the_scripts_and_no_address_to_load():
    page = offline_template(["var a = 1;", "var b = 2;"])
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert "var a = 1;" in page and "var b = 2;" in page
    assert "http" not in page and "src=" not in page


@needs_npm
@needs_chromium
def test_dvc_plots_show_with_the_template_draws_every_chart_offline_and_the_cdn_page_none(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "loss.tsv").write_text("step\tloss\n0\t2.0\n1\t1.5\n2\t1.2\n")
    (repo / "reward.tsv").write_text("step\treward\n0\t0.1\n1\t0.3\n")
    template = write_template(tmp_path / "offline.html", tmp_path / "vega")  # fetched with npm pack
    run(["dvc", "plots", "show", "loss.tsv", "reward.tsv", "-o", "offline", "--html-template", str(template)], repo)
    run(["dvc", "plots", "show", "loss.tsv", "reward.tsv", "-o", "cdn"], repo)
    assert charts_drawn(repo / "offline/index.html") == (2, 2)
    assert charts_drawn(repo / "cdn/index.html") == (0, 2)  # DVC's own page, Vega from a CDN: blank here


REPORT = """| model | gsm8k (n=4) |
|---|---:|
| sft | 50.0% (15.0–85.0) |

**Did each stage help?** Each model against the one it was trained from.

| model | against | verdict |
|---|---|---|
| grpo | sft | **better** |

**sft**

| figure | value |
|---|---:|
| eval loss | 0.109 |
"""


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + path.stem.encode())
    return path


def test_the_page_opens_with_the_results_then_the_accuracy_chart_then_the_verdicts_and_figures(tmp_path):
    for stem in ("attention_gsm8k_last", "training_curves", "accuracy", "reward_curves"):
        png(tmp_path / f"{stem}.png")
    above, below = page_sections(REPORT, tmp_path)
    order = [above.index(needle) for needle in (
        "<td>sft</td>", base64.b64encode(b"\x89PNG\r\n\x1a\naccuracy").decode(), "Did each stage help?",
        "<strong>better</strong>", 'alt="training_curves"', 'alt="reward_curves"', 'alt="attention_gsm8k_last"')]
    assert order == sorted(order)
    assert "eval loss" not in above and "<details" in below and "eval loss" in below  # stage figures: folded, last
    page = offline_template(["var a = 1;"], above, below)
    assert page.index("Did each stage help?") < page.index("{plot_divs}") < page.index("eval loss")


def test_a_page_before_any_report_says_how_to_get_one(tmp_path):
    above, below = page_sections(None, tmp_path)
    assert "make report" in above and below == ""


def test_a_report_without_its_results_table_is_named():
    with pytest.raises(DataError, match="no results table"):
        page_sections("**sft**\n", None)
