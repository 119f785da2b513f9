"""``python -m mmcit.cli``: the command line (as launchers such as ``accelerate launch -m`` need)."""
import sys

from mmcit.cli import main

sys.exit(main())
