"""`python -m fleetbeat` runs the command line."""

from fleetbeat.cli import main

raise SystemExit(main())
