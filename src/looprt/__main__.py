from looprt.cli import main

raise SystemExit(main())
