"""``python -m sensorlm.cli ...``: the same as the ``sensorlm`` console command."""

import sys

from sensorlm.cli import main

sys.exit(main())
