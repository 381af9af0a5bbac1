"""A worker that eats memory on its first run only: hog.py MIB_TARGET MIB_PER_STEP [DRAIN_S].

Records each run and each SIGTERM in $RECORD_DIR/hog.runs, so a test can tell a graceful
restart (SIGTERM, exit 0) from the kernel's OOM kill (SIGKILL, nothing recorded).
"""

import os
import signal
import sys
import time

record = os.path.join(os.environ["RECORD_DIR"], "hog.runs")
first_run = not os.path.exists(record)


def note(text: str) -> None:
    with open(record, "a") as f:
        f.write(text + "\n")


def on_term(signum, frame):
    note(f"SIGTERM at {len(hoard)} MiB")
    time.sleep(drain)  # "finishing the current task" before a graceful exit
    sys.exit(0)


hoard: list[bytearray] = []
signal.signal(signal.SIGTERM, on_term)
note(f"run {os.getpid()}")
print(f"hog started, first run: {first_run}", flush=True)
target, step = int(sys.argv[1]), int(sys.argv[2])
drain = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
while True:
    if first_run and len(hoard) < target:
        for _ in range(step):
            hoard.append(bytearray(b"x" * (1024 * 1024)))  # touched: really resident
        print(f"hog holds {len(hoard)} MiB", flush=True)
    time.sleep(0.05)
