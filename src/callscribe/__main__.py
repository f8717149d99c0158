from callscribe.cli import main

raise SystemExit(main())
