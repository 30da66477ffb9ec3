"""A process that runs a pipeline engine until it is killed (for the crash-resume tests).

    python recovery_worker.py DATABASE_URL EXECUTOR_ID

Reads commands from stdin, one per line, and answers each with one JSON line:
``create <definition json>`` -> the run (started), ``event <run id> <name> <data json>`` -> the run.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.integration.pipelines.harness import running_engine  # noqa: E402


async def main(url: str, executor_id: str) -> None:
    async with running_engine(url, executor_id=executor_id) as engine:
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, _, rest = line.strip().partition(" ")
            if command == "create":
                created = await engine.create_pipeline(json.loads(rest))
                answer = await engine.start_run(created["id"], {})
            elif command == "event":
                run_id, name, data = rest.split(" ", 2)
                answer = await engine.send_event(run_id, name, json.loads(data))
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
