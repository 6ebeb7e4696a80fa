"""Video Custom Diffusion (Magic-Me, arXiv 2402.09368) as pure tensor functions.

Nothing here imports ComfyUI: the functions take tensors and callables, so they serve
ComfyUI nodes (``nodes/``) and plain diffusers pipelines alike.
"""

__version__ = "0.3.0"
