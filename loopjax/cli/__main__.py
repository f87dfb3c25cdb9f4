import sys

from loopjax.cli import main

sys.exit(main())
