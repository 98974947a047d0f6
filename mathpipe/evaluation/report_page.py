"""An HTML template for `dvc plots show` that draws every chart with no network.

    python -m mathpipe.evaluation.report_page dvc_plots/.offline.html .venv/vega   # make report / make plots run it
    dvc plots show -o dvc_plots --html-template dvc_plots/.offline.html

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so on a cluster node (or any
machine without network) its data-series charts stay blank. This writes DVC's own page layout with
those three scripts inlined, fetched once from the npm registry with `npm pack` at the versions
dvc-render's page asks for, checked against pinned sha512 digests and kept in a cache folder.
The template has no `{scripts}` placeholder, so DVC adds no CDN tag to it.
"""

from __future__ import annotations

import base64
import hashlib
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


def offline_template(scripts: list[str]) -> str:
    """dvc-render's page layout with the given scripts inline instead of `{scripts}`."""
    from dvc_render.html import PAGE_HTML

    inline = "\n".join(f'<script type="text/javascript">\n{s}\n</script>' for s in scripts)
    return PAGE_HTML.replace("{scripts}", inline).replace("<title>DVC Plot</title>", "<title>mathpipe report</title>")


def write_template(template_path: Path, cache_dir: Path) -> Path:
    scripts = [cached_script(bundle, cache_dir) for bundle in BUNDLES]
    template_path.parent.mkdir(parents=True, exist_ok=True)
    template_path.write_text(offline_template(scripts), encoding="utf-8")
    return template_path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mathpipe.evaluation.report_page TEMPLATE.html CACHE_DIR", file=sys.stderr)
        return 2
    try:
        path = write_template(Path(argv[0]), Path(argv[1]))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{path}: offline page template (Vega inlined)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
