"""Another process of the container that grows on demand: once $EAT_FLAG exists it holds
$EAT_MIB MiB (resident), then sleeps."""

import os
import time

held = None
while True:
    if held is None and os.path.exists(os.environ["EAT_FLAG"]):
        held = bytearray(int(os.environ["EAT_MIB"]) * 1024 * 1024)
        held[::4096] = b"x" * (len(held) // 4096)
        print(f"eater holds {len(held) >> 20} MiB", flush=True)
    time.sleep(0.05)
