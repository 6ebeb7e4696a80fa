"""Listen on a ComfyUI server's websocket for the texts nodes show under themselves (progress_text)."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import uuid

TEXT_EVENT = 3  # server.BinaryEventTypes.TEXT: node id length, node id, UTF-8 text


class NodeTexts:
    """``with NodeTexts(host.url) as texts: host.run(graph)``; then ``texts.of(node_id)``.

    The server broadcasts these texts to every connected client, so any client id hears them.
    """

    def __init__(self, url: str):
        self.url = url.replace("http", "ws", 1) + f"/ws?clientId={uuid.uuid4().hex}"
        self.received: list[tuple[str, str]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self._error: BaseException | None = None

    def of(self, node_id: str) -> list[str]:
        """The texts shown under ``node_id``, in order."""
        return [text for nid, text in self.received if nid == str(node_id)]

    async def _listen(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        message = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if message.type == aiohttp.WSMsgType.BINARY:
                        self._parse(message.data)
                    elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        except Exception as error:  # reported by __enter__ / __exit__
            self._error = error
            self._ready.set()

    def _parse(self, data: bytes) -> None:
        (event,) = struct.unpack(">I", data[:4])
        if event == TEXT_EVENT:
            (length,) = struct.unpack(">I", data[4:8])
            self.received.append((data[8:8 + length].decode(), data[8 + length:].decode(errors="replace")))

    def __enter__(self) -> "NodeTexts":
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"could not listen on {self.url}: {self._error}")
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)  # texts sent just before the run finished are still on their way
        self._stop.set()
        self._thread.join(10)
