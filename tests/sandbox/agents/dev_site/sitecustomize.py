"""On PYTHONPATH for the rootless test only: a dev (editable) install of agentos rebuilds on
first import, which an unprivileged uid cannot do in root's build tree. The code is already
built, so mark the rebuild as done (no effect on a regular install)."""
import sys

for finder in sys.meta_path:
    if type(finder).__name__ == "ScikitBuildRedirectingFinder":
        finder.rebuilt = True  # type: ignore[attr-defined]
