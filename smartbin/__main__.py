from smartbin.cli import main

raise SystemExit(main())
