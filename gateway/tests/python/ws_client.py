"""WebSocket client: exchanges messages through the gateway before and after the test says 'go'
on stdin (the test reloads the gateway in between). Prints 'ready', then 'ok'."""
import asyncio
import sys

import websockets


async def main(url):
    async with websockets.connect(url, open_timeout=10) as ws:
        for i in range(50):
            await ws.send(f"before-{i}")
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == f"before-{i}", got
        big = "x" * 200_000
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 5) == big
        print("ready", flush=True)
        line = await asyncio.get_event_loop().run_in_executor(None, sys.stdin.readline)
        assert line.strip() == "go", line
        for i in range(50):
            await ws.send(f"after-{i}")
            got = await asyncio.wait_for(ws.recv(), 5)
            assert got == f"after-{i}", got
    print("ok", flush=True)


asyncio.run(main(sys.argv[1]))
