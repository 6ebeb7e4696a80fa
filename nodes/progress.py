"""What a running node shows before it is done: text under it (progress_text) and a live preview image."""

from __future__ import annotations

import torch


def send_progress_text(node_id: str | None, text: str) -> None:
    """Show text under the node while it runs (no-op outside a server)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and node_id is not None:
        server.send_progress_text(text, node_id)


def send_preview_image(image: torch.Tensor, total: int) -> None:
    """Show a ``[H, W, C]`` image on the running node as its live preview, at progress 0 of ``total`` (the steps
    that follow); the sampler's latent previews replace it. A no-op outside a server."""
    import comfy.utils
    from comfy.cli_args import args
    from PIL import Image

    pixels = (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    comfy.utils.ProgressBar(total).update_absolute(0, total, preview=("PNG", Image.fromarray(pixels), args.preview_size))
