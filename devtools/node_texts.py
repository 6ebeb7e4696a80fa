"""Listen on a ComfyUI server's websocket for what running nodes show: texts under them (progress_text), their
live preview images and the JSON events (progress, executing) in between, in arrival order."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import uuid

TEXT_EVENT = 3  # server.BinaryEventTypes.TEXT: node id length, node id, UTF-8 text
PREVIEW_EVENT = 4  # server.BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA: metadata length, JSON metadata, image


class NodeTexts:
    """``with NodeTexts(host.url) as texts: host.run(graph)``; then ``texts.of(node_id)``.

    The server broadcasts these texts to every connected client, so any client id hears them. Previews and
    progress go only to the client that queued the graph: ``host.run(graph, client_id=texts.client_id)``.
    Like the frontend, this client says it reads previews with metadata (the node id comes with each image).
    """

    def __init__(self, url: str):
        self.client_id = uuid.uuid4().hex
        self.url = url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        self.received: list[tuple[str, str]] = []
        # ("preview", node id, MIME type, image bytes) or (JSON event type, its data), in arrival order
        self.events: list[tuple] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self._error: BaseException | None = None

    def of(self, node_id: str) -> list[str]:
        """The texts shown under ``node_id``, in order."""
        return [text for nid, text in self.received if nid == str(node_id)]

    def previews(self, node_id: str) -> list[tuple[str, bytes]]:
        """The live preview images shown on ``node_id``: (MIME type, bytes), in order."""
        return [event[2:] for event in self.events if event[0] == "preview" and event[1] == str(node_id)]

    async def _listen(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
                await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        message = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if message.type == aiohttp.WSMsgType.BINARY:
                        self._parse(message.data)
                    elif message.type == aiohttp.WSMsgType.TEXT:
                        event = json.loads(message.data)
                        self.events.append((event.get("type"), event.get("data")))
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
        elif event == PREVIEW_EVENT:
            (length,) = struct.unpack(">I", data[4:8])
            metadata = json.loads(data[8:8 + length])
            self.events.append(("preview", str(metadata["node_id"]), metadata["image_type"], bytes(data[8 + length:])))

    def __enter__(self) -> "NodeTexts":
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"could not listen on {self.url}: {self._error}")
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)  # texts sent just before the run finished are still on their way
        self._stop.set()
        self._thread.join(10)
