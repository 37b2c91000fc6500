"""The MkDocs hook of ``mkdocs.yml``: a page may link to a file elsewhere in the repository
by its relative path (``../raykd/bench/results/wkd.md``, which works on a forge as well); the
hook puts that file into the site and points the link at it, so that ``mkdocs build
--strict`` fails on a link to a file that does not exist."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

__all__ = ["on_files", "on_page_markdown"]

LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
"""A Markdown link or image whose target has no spaces (every link of these docs)."""


def _outside(source: Path, target: str, docs: Path, root: Path) -> str | None:
    """The repository path that a relative link of the file ``source`` points to, when the
    target lies outside ``docs`` (a page of docs/, or a repository file the site took in)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
        return None
    resolved = Path(posixpath.normpath(source.parent / target.split("#", 1)[0]))
    if resolved == docs or docs in resolved.parents or root not in resolved.parents:
        return None
    return resolved.relative_to(root).as_posix()


def _paths(config: MkDocsConfig) -> tuple[Path, Path]:
    return Path(config.docs_dir).resolve(), Path(config.config_file_path).resolve().parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add every repository file that a page links to outside docs/ to the site (and what the
    Markdown files among them link to, in turn)."""
    from mkdocs.structure.files import File

    docs, root = _paths(config)
    queue = [Path(page.abs_src_path) for page in files.documentation_pages() if page.abs_src_path]
    taken: set[str] = set()
    while queue:
        source = queue.pop()
        for match in LINK.finditer(source.read_text(encoding="utf-8")):
            outside = _outside(source, match.group(2), docs, root)
            if outside is None or outside in taken or not (root / outside).is_file():
                continue
            taken.add(outside)
            files.append(File(outside, src_dir=str(root), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
            if outside.endswith(".md"):
                queue.append(root / outside)
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Point links that leave docs/ at the copies ``on_files`` added (a missing file then fails
    the strict build as any broken link does)."""
    docs, root = _paths(config)
    source = Path(page.file.abs_src_path or "")

    def relink(match: re.Match[str]) -> str:
        target = match.group(2)
        outside = _outside(source, target, docs, root)
        if outside is None:
            return match.group(0)
        anchor = target[len(target.split("#", 1)[0]):]
        local = posixpath.relpath(outside, posixpath.dirname(page.file.src_uri) or ".")
        return f"{match.group(1)}{local}{anchor}{match.group(3)}"

    return LINK.sub(relink, markdown)
