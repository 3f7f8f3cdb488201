"""The selector site: jinja2 templates and static assets, rendered into the public tree.

``templates/*.html`` become pages at the top of the public tree; every file of
``site/`` is copied to ``assets/``. Asset links carry a digest of the file
(``assets/app.js?v=…``) so a browser never mixes an old script with a new page.
The output depends only on the sources and the settings (no dates), and a file
that already holds its bytes is left alone, so a render that changes nothing
writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import jinja2

from asu_ci import __version__
from asu_ci.config import Settings
from asu_ci.fsutil import write_bytes

#: Folder of the public tree that holds the copied assets (and nothing else).
ASSETS = "assets"
TITLE = "asu-ci firmware selector"


def source_dir(name: str) -> Path:
    """``templates`` or ``site``: package data in a wheel, the repository root in a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_data" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder of asu-ci is missing from {package}")


def _assets(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative POSIX path; hidden names are skipped."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            found[rel.as_posix()] = path.read_bytes()
    return found


def _prune(folder: Path, keep: set[str]) -> None:
    """Remove what an older site left in ``folder``: files not in ``keep``, then empty dirs."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.relative_to(folder).as_posix() not in keep:
            path.unlink()


def _asset_url(digests: dict[str, str]) -> Callable[[str], str]:
    def asset(name: str) -> str:
        if name not in digests:
            raise jinja2.TemplateRuntimeError(f"no asset named {name!r} in site/")
        return f"{ASSETS}/{name}?v={digests[name]}"

    return asset


def render_site(settings: Settings, public: Path | None = None) -> tuple[int, int]:
    """Write the pages and assets into ``public`` (default: the settings' public tree).

    ``settings.server.api_url`` is where the pages send builds when the
    endpoint is not on the same origin as the static files (empty: the same
    origin). Returns how many files were written and how many were unchanged.
    """
    public = settings.public_dir if public is None else public
    assets = _assets(source_dir("site"))
    written = sum(write_bytes(public / ASSETS / rel, data) for rel, data in assets.items())
    _prune(public / ASSETS, set(assets))

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(source_dir("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in assets.items()}
    context = {
        "title": TITLE,
        "version": __version__,
        "api_url": settings.server.api_url.rstrip("/"),
        "contact": settings.server.contact,
        "asset": _asset_url(digests),
    }
    pages = env.list_templates(filter_func=_is_page)
    for name in pages:
        html = env.get_template(name).render(context)
        written += write_bytes(public / name, html.encode())
    return written, len(assets) + len(pages) - written


def _is_page(name: str) -> bool:
    """Templates that become pages; names starting with ``_`` are partials."""
    return name.endswith(".html") and not Path(name).name.startswith("_")
