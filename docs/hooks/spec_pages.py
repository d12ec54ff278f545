"""mkdocs hook: publish the spec's op pages (``spec/ops/*.md``) as the site's ``ops/*.md``.

The pages stay where the package ships them (``rnnspec.ops``); the site reads
them from there at build time, so there is one copy of each. Their links to
one another (``[gru](gru.md)``) work unchanged, since they all land in ``ops/``.
``mkdocs serve`` rebuilds when one of them changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

#: The folder of the op pages, relative to the folder of mkdocs.yml.
SPEC_PAGES = Path("spec/ops")
#: Where they go on the site.
SITE_FOLDER = "ops"


def _spec_folder(config: Any) -> Path:
    return Path(config.config_file_path).parent / SPEC_PAGES


def on_files(files: Files, config: Any) -> Files:
    """Add every ``spec/ops/*.md`` to the site's files as ``ops/<name>.md``."""
    for path in sorted(_spec_folder(config).glob("*.md")):
        files.append(File.generated(config, f"{SITE_FOLDER}/{path.name}", abs_src_path=str(path)))
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """Watch the spec's pages under ``mkdocs serve``."""
    server.watch(str(_spec_folder(config)))
    return server
