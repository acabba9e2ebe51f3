"""Where the browser's third-party JavaScript comes from: never a CDN, never this repository.

- plotly.js ships inside plotly's wheel (``plotly/package_data/plotly.min.js``);
- mermaid and htmx come from the npm registry at install time: ``deploy/install.sh`` packs the
  pinned versions (integrity checked) into ``swf/web/vendor/``, which git ignores.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
VENDOR = HERE / "vendor"
VENDOR_FILES = ("mermaid.min.js", "htmx.min.js")


def plotly_dir() -> Path | None:
    spec = find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "package_data"


def missing() -> list[str]:
    """The JavaScript files the pages need that are not installed."""
    absent = [f"swf/web/vendor/{name} (npm, by deploy/install.sh)" for name in VENDOR_FILES
              if not (VENDOR / name).is_file()]
    plotly = plotly_dir()
    if plotly is None or not (plotly / "plotly.min.js").is_file():
        absent.append("plotly.min.js (the plotly package)")
    return absent
