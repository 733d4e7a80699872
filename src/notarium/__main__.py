import sys

from notarium.cli import main

sys.exit(main())
