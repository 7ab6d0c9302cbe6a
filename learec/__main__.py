import sys

from learec.cli import main

sys.exit(main())
