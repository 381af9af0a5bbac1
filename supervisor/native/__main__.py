import sys

from supervisor.native.cli import main

sys.exit(main())
