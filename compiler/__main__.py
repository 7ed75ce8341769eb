"""`python -m compiler ARGS` is `dlc ARGS` (for launchers such as torchrun's `-m`)."""
import sys

from compiler.commands.cli import main

sys.exit(main())
