"""python -m poller: the same as the hwpoller command."""

from poller.cli import main

raise SystemExit(main())
