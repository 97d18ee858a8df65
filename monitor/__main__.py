"""`python -m monitor`: the same entry point as the `model-monitor` console command."""

from monitor.cli.main import main

raise SystemExit(main())
