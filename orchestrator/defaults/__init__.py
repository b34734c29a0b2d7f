"""Files shipped inside the package, so an installed Switchboard runs from any directory.

The default teams file is `teams/default.yaml` at the top of the source tree; this package
holds a symlink to it, which the wheel build turns into a copy of the same bytes (one source,
nothing to keep in step by hand).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def teams_file() -> Path:
    """The packaged default teams file (the offline scripted models)."""
    return Path(str(files(__name__).joinpath("teams.yaml")))
