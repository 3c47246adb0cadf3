from eschaton.cli.main import main

raise SystemExit(main())
