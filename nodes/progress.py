"""Text under a node while it runs (ComfyUI's progress_text event)."""

from __future__ import annotations


def send_progress_text(node_id: str | None, text: str) -> None:
    """Show text under the node while it runs (no-op outside a server)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and node_id is not None:
        server.send_progress_text(text, node_id)
