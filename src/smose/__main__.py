import sys

from smose.cli import main

sys.exit(main())
