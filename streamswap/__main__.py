from streamswap.cli import main

raise SystemExit(main())
