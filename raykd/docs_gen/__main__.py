"""``python -m raykd.docs_gen [--check]``."""

from raykd.docs_gen import main

raise SystemExit(main())
