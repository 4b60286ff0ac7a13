"""``python -m jaxlstm``: the command line (`jaxlstm.cli`), e.g. ``python -m jaxlstm demo``."""

from jaxlstm.cli import main

raise SystemExit(main())
