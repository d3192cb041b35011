from headscope.cli import main

raise SystemExit(main())
