"""``python -m simsiam`` (and ``torchrun -m simsiam``) run the command line."""
import sys

from .cli import main

sys.exit(main())
