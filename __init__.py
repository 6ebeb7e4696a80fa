"""Video Custom Diffusion (Magic-Me) for ComfyUI: the pack's entry point.

ComfyUI imports this file when the repository sits in ``custom_nodes/``. The method lives in
``vcd_core/`` (pure tensor code); ``nodes/`` adapts it to ComfyUI's types.
"""

from comfy_api.latest import ComfyExtension, io

from .nodes import NODES

WEB_DIRECTORY = "./web"  # the frontend extension: the gamma correlation chart under VCD nodes


class VCDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> VCDExtension:
    return VCDExtension()
