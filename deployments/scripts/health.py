"""Counts to N (first argument, default 5), one step a second; warns on stderr half-way."""

import sys
import time

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
for step in range(1, steps + 1):
    print(f"step {step}/{steps}", flush=True)
    if step == steps // 2:
        print("half-way there", file=sys.stderr, flush=True)
    time.sleep(1)
print("healthy")
