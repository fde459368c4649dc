"""``python -m agentos`` is the ``agentos`` command."""
import sys

from .cli.main import main

sys.exit(main())
