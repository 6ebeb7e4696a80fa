"""Test-only ComfyUI pack: tiny seeded SD1.5-architecture models in place of a checkpoint.

Loaded by the test harness and the demo through --extra-model-paths-config; never shipped.
Its one node has CheckpointLoaderSimple's outputs (MODEL, CLIP, VAE), so an API workflow runs
on it by swapping that one node.
"""

from comfy_api.latest import ComfyExtension, io

from . import tiny


class TinyCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDTestTinyCheckpoint",
            display_name="VCD Test Tiny Checkpoint",
            category="VCD/testing",
            description="Tiny seeded SD1.5-architecture MODEL, CLIP and VAE (no weights needed).",
            inputs=[io.Int.Input("seed", default=0, min=0, max=2**31 - 1)],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, seed: int) -> io.NodeOutput:
        import folder_paths

        embeddings = tuple(folder_paths.get_folder_paths("embeddings"))
        return io.NodeOutput(tiny.tiny_model(seed), tiny.tiny_clip(seed, embeddings), tiny.tiny_vae(seed))


class TestPackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [TinyCheckpoint]


async def comfy_entrypoint() -> TestPackExtension:
    return TestPackExtension()
