"""bjoern is single-process: bind once, fork N-1 times, every process runs the loop."""

import os
import sys

import bjoern

from apps import app

port, workers = int(sys.argv[1]), int(sys.argv[2])
bjoern.listen(app, "127.0.0.1", port)
for _ in range(workers - 1):
    if os.fork() == 0:
        break
bjoern.run()
