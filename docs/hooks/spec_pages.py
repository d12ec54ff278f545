"""mkdocs hook: publish the spec's op pages (``spec/ops/*.md``) as the site's ``ops/*.md``, and list them in the nav.

The pages stay where the package ships them (``rnnspec.ops``); the site reads
them from there at build time, so there is one copy of each. Their links to
one another (``[gru](gru.md)``) work unchanged, since they all land in ``ops/``.
``mkdocs serve`` rebuilds when one of them changes.

The nav's ``Ops`` section (:data:`NAV_SECTION` in ``mkdocs.yml``) is filled
here too: the sequence conventions first, then one entry per op in the order
of :data:`rnnspec.ops.OPS`. A new op needs its record and its page, no edit
of ``mkdocs.yml``. A page without a record is left out of the nav, which the
strict build reports (``validation: omitted_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

#: The folder of the op pages, relative to the folder of mkdocs.yml.
SPEC_PAGES = Path("spec/ops")
#: Where they go on the site.
SITE_FOLDER = "ops"
#: The nav section that lists the op pages.
NAV_SECTION = "Ops"
#: The pages listed before the ops (title, page name): the conventions every sequence op follows.
LEADING_PAGES = (("Sequence conventions", "sequence"),)


def _spec_folder(config: Any) -> Path:
    return Path(config.config_file_path).parent / SPEC_PAGES


def op_nav() -> list[dict[str, str]]:
    """The entries of the ``Ops`` section: the leading pages, then every op of ``rnnspec.ops.OPS`` in order."""
    from rnnspec.ops import OPS  # the installed package (the docs session installs it)

    pages = [*LEADING_PAGES, *((name, name) for name in OPS)]
    return [{title: f"{SITE_FOLDER}/{name}.md"} for title, name in pages]


def on_config(config: Any) -> Any:
    """Fill the nav's ``Ops`` section with :func:`op_nav` (entries already there are kept, not repeated)."""
    nav = config["nav"]
    section = next((item for item in nav or () if isinstance(item, dict) and NAV_SECTION in item), None)
    if section is None:
        raise ValueError(f"spec_pages: mkdocs.yml's nav has no {NAV_SECTION!r} section to list the op pages in")
    listed = list(section[NAV_SECTION] or ())
    present = {page for entry in listed if isinstance(entry, dict) for page in entry.values()}
    section[NAV_SECTION] = listed + [entry for entry in op_nav() if next(iter(entry.values())) not in present]
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add every ``spec/ops/*.md`` to the site's files as ``ops/<name>.md``."""
    for path in sorted(_spec_folder(config).glob("*.md")):
        files.append(File.generated(config, f"{SITE_FOLDER}/{path.name}", abs_src_path=str(path)))
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """Watch the spec's pages under ``mkdocs serve``."""
    server.watch(str(_spec_folder(config)))
    return server
