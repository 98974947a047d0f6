"""make report's page: the results first, then the charts, drawn with no network.

    python -m mathpipe.evaluation.report_page dvc_plots/.offline.html .venv/vega   # make report / make plots run it
    dvc plots show -o dvc_plots --html-template dvc_plots/.offline.html

The page opens with what a reader came for: the report's results (every model on every benchmark,
then whether each stage helped, from `report.table_markdown`) with the accuracy chart inlined after
the first table, then the report's other figures (`report.plots_dir`/png: loss and reward curves,
attention comparisons). Under them DVC draws the plots of dvc.yaml: the DVCLive series it lists at
the top level, then each model's attention maps. Each stage's own figures close the page, folded.

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so on a cluster node (or any
machine without network) its data-series charts stay blank. This writes DVC's own page layout with
those three scripts inlined, fetched once from the npm registry with `npm pack` at the versions
dvc-render's page asks for, checked against pinned sha512 digests and kept in a cache folder.
The template has no `{scripts}` placeholder, so DVC adds no CDN tag to it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mathpipe.errors import PipelineError


@dataclass(frozen=True)
class Bundle:
    package: str
    version: str
    path: str  # inside the package tarball
    integrity: str  # the registry's dist.integrity of the tarball

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


# dvc-render 1.0.2's VegaRenderer.SCRIPTS asks for these versions (tests/test_report_page.py checks it).
BUNDLES = (
    Bundle("vega", "5.20.2", "package/build/vega.min.js",
           "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    Bundle("vega-lite", "5.2.0", "package/build/vega-lite.min.js",
           "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    Bundle("vega-embed", "6.18.2", "package/build/vega-embed.min.js",
           "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
)

# The placeholders dvc-render substitutes anywhere in a template: a bundle must not contain them.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


def integrity_of(tarball: bytes) -> str:
    """npm's integrity string (Subresource Integrity, sha512) of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()


def script_from_tarball(bundle: Bundle, tarball: bytes) -> str:
    """The bundle's minified script, after checking the tarball is the pinned one."""
    found = integrity_of(tarball)
    if found != bundle.integrity:
        raise PipelineError(f"{bundle.spec}: the npm registry's tarball has integrity {found}, "
                            f"not the pinned {bundle.integrity} (mathpipe/evaluation/report_page.py)")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        try:
            member = archive.extractfile(bundle.path)
        except KeyError:
            member = None
        if member is None:
            raise PipelineError(f"{bundle.spec}: the tarball has no {bundle.path}")
        script = member.read().decode("utf-8")
    if "</script" in script.lower() or any(p in script for p in PLACEHOLDERS):
        raise PipelineError(f"{bundle.spec}: {bundle.path} cannot be inlined in a page "
                            "(it contains '</script' or a dvc-render placeholder)")
    return script


def npm_pack(bundle: Bundle) -> bytes:
    """The package tarball, downloaded by npm (its registry, proxy and credentials settings apply)."""
    npm = shutil.which("npm")
    if npm is None:
        raise PipelineError("npm not found: the offline report page fetches Vega once from the npm registry; "
                            "install Node.js (Debian: apt-get install npm) or use `dvc plots show` for the CDN page")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", bundle.spec, "--pack-destination", tmp, "--silent"],
                              capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise PipelineError(f"npm pack {bundle.spec} failed: {done.stderr.strip() or done.stdout.strip()}")
        return tarballs[0].read_bytes()


def cached_script(bundle: Bundle, cache_dir: Path) -> str:
    """The bundle's script from cache_dir, fetched (and checked) on first use."""
    cached = cache_dir / f"{bundle.package}-{bundle.version}.min.js"
    if not cached.is_file():
        script = script_from_tarball(bundle, npm_pack(bundle))
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        partial.write_text(script, encoding="utf-8")
        partial.replace(cached)
    return cached.read_text(encoding="utf-8")


STYLE = """<style>
    body { font-family: system-ui, sans-serif; margin: 16px 24px; color: #222; }
    h1 { font-size: 20px; margin: 0 0 8px; }
    .results table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
    .results th, .results td { border-bottom: 1px solid #ddd; padding: 2px 8px; }
    .results p { font-size: 13px; max-width: 1200px; margin: 6px 0; }
    .results img.chart { width: min(100%, 1200px); display: block; margin: 6px 0; }
    .results img.figure { max-width: min(100%, 1400px); display: block; margin: 12px 0; }
    details { font-size: 13px; margin: 12px 0; }
    table { border-spacing: 15px; }
</style>"""


def markdown_html(markdown: str) -> str:
    """The report's markdown (pipe tables, bold, code) as HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


# The report's own figures, in the order the page shows them after the results (any other PNG of the
# report comes after these, by name).
FIGURE_ORDER = ("training_curves", "reward_curves")


def _img(png: Path, css: str) -> str:
    return (f'<img class="{css}" alt="{html.escape(png.stem)}" '
            f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">')


def page_sections(report_markdown: str | None, figures_dir: Path | None) -> tuple[str, str]:
    """(what goes above DVC's plots, what goes below). Above: the results, with the accuracy chart
    after their first table, then the report's other figures (loss and reward curves, attention
    comparisons), inlined because DVC draws images only after every data series. Below: each stage's
    figures, folded. Without a report yet, a line saying how to get one."""
    from mathpipe.evaluation.report import split_report

    if report_markdown is None:
        return ('<div class="results"><h1>mathpipe report</h1><p>No results yet: run <code>make report</code>.'
                "</p></div>"), ""
    results, stages = split_report(report_markdown)
    first_table, _, rest = results.partition("\n\n")
    pngs = sorted(figures_dir.glob("*.png")) if figures_dir and figures_dir.is_dir() else []
    chart = "".join(_img(png, "chart") for png in pngs if png.stem == "accuracy")
    others = sorted((png for png in pngs if png.stem != "accuracy"),
                    key=lambda png: (FIGURE_ORDER.index(png.stem) if png.stem in FIGURE_ORDER else len(FIGURE_ORDER),
                                     png.stem))
    above = (f'<div class="results"><h1>mathpipe report</h1>{markdown_html(first_table)}{chart}'
             f"{markdown_html(rest)}{''.join(_img(png, 'figure') for png in others)}</div>")
    below = ('<details class="results"><summary>Each stage\'s own figures (metrics/report.md)</summary>'
             f"{markdown_html(stages)}</details>"
             "<p>Every DVCLive series of a stage (learning rate, gradient norm, runtimes, ...): "
             f"<code>{html.escape('dvc plots show dvclive/<stage>/plots/metrics')}</code></p>")
    for part in (above, below):
        if any(p in part for p in PLACEHOLDERS):
            raise PipelineError("the report holds a dvc-render placeholder "
                                f"({', '.join(PLACEHOLDERS)}) and cannot go in the page")
    return above, below


def offline_template(scripts: list[str], above: str = "", below: str = "") -> str:
    """dvc-render's page layout with the given scripts inline instead of `{scripts}`, and the given
    HTML above and below the plots."""
    from dvc_render.html import PAGE_HTML

    inline = "\n".join(f'<script type="text/javascript">\n{s}\n</script>' for s in scripts)
    page = PAGE_HTML.replace("{scripts}", inline).replace("<title>DVC Plot</title>", "<title>mathpipe report</title>")
    page = page.replace("{plot_divs}", f"{above}\n    {{plot_divs}}\n    {below}")
    return page.replace("<style>\n        table {\n            border-spacing: 15px;\n        }\n    </style>", STYLE)


def write_template(template_path: Path, cache_dir: Path, report_markdown: Path | None = None,
                   figures_dir: Path | None = None) -> Path:
    """The page template, with the report and its figures (PNGs in figures_dir) above the plots
    where the report exists."""
    scripts = [cached_script(bundle, cache_dir) for bundle in BUNDLES]
    markdown = report_markdown.read_text(encoding="utf-8") if report_markdown and report_markdown.is_file() else None
    above, below = page_sections(markdown, figures_dir)
    template_path.parent.mkdir(parents=True, exist_ok=True)
    template_path.write_text(offline_template(scripts, above, below), encoding="utf-8")
    return template_path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mathpipe.evaluation.report_page TEMPLATE.html CACHE_DIR", file=sys.stderr)
        return 2
    from mathpipe.config import load_section
    from mathpipe.evaluation.report import ReportConfig

    try:
        report = load_section("report", ReportConfig)
        path = write_template(Path(argv[0]), Path(argv[1]), Path(report.table_markdown),
                              Path(report.plots_dir) / "png")
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{path}: offline page template (Vega inlined, {report.table_markdown} on top)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
