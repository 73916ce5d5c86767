"""A trial without the SDK: prints `epoch=N loss=...` lines (parsed from its output)."""

import json
import os
import time

params = json.loads(os.environ["KUBETUNE_PARAMS"])
for epoch in range(1, 6):
    time.sleep(0.02)
    print(f"epoch={epoch} loss={(params['x'] - 0.3) ** 2 + 1 / epoch}", flush=True)
