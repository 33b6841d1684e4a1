"""python -m kvmmanager_agent.protocol --markdown: print docs/protocol.md."""

import sys

from .markdown import main

sys.exit(main())
