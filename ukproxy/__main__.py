import sys

from ukproxy.cli import main

sys.exit(main())
