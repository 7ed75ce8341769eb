"""A `python -m compiler` whose rank 1 fails at round 3 (the fault tests of
tests/test_distributed.py): DLC_FAULT=die exits at once (a crashed worker), =hang sleeps
(a stuck one: only the process-group timeout can end the job)."""
import os
import sys
import time

from compiler.commands.cli import main
from compiler.training import loop

_round = loop.Trainer._round


def faulty_round(self, batch):
    if self.comm.rank == 1 and self.pos.round == 3:
        if os.environ.get("DLC_FAULT") == "hang":
            time.sleep(600)
        os._exit(7)
    return _round(self, batch)


loop.Trainer._round = faulty_round
sys.exit(main())
