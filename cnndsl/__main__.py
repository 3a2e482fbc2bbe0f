"""`python -m cnndsl ...`: the same as the `cnndsl` command."""

from .cli import main

raise SystemExit(main())
