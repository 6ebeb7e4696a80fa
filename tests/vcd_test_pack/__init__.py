"""Test-only ComfyUI pack: tiny seeded SD1.5-architecture models in place of a checkpoint.

Loaded by the test harness and the demo through --extra-model-paths-config; never shipped.
Its checkpoint node has CheckpointLoaderSimple's outputs (MODEL, CLIP, VAE), so an API workflow runs
on it by swapping that one node; two more nodes record sampling calls and save IMAGE tensors exactly.
"""

from pathlib import Path

import torch
from comfy_api.latest import ComfyExtension, io

from . import probe, tiny

PROBE_FOLDER, TENSOR_FOLDER = "vcd_probe", "vcd_tensors"  # under the output folder


def output_folder(name: str) -> Path:
    """A folder of this pack's records under ComfyUI's output folder."""
    import folder_paths

    return Path(folder_paths.get_output_directory()) / name


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


class SamplingProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDTestSamplingProbe",
            display_name="VCD Test Sampling Probe",
            category="VCD/testing",
            description="Records each sampling call of this MODEL (the noise it gets, UNet and temporal-layer "
                        "calls inside it) into output/vcd_probe/TAG-N.safetensors.",
            inputs=[io.Model.Input("model"), io.String.Input("tag"),
                    io.Boolean.Input("skip_sampling", default=False, tooltip="Record, then return the latent unsampled.")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, tag: str, skip_sampling: bool) -> io.NodeOutput:
        return io.NodeOutput(probe.sampling_probe(model, output_folder(PROBE_FOLDER), tag, skip_sampling))


class SaveImageTensor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDTestSaveImageTensor",
            display_name="VCD Test Save Image Tensor",
            category="VCD/testing",
            description="Saves an IMAGE batch exactly (float32) as output/vcd_tensors/NAME.safetensors.",
            inputs=[io.Image.Input("images"), io.String.Input("name")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, name: str) -> io.NodeOutput:
        import safetensors.torch

        folder = output_folder(TENSOR_FOLDER)
        folder.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file({"images": images.float().contiguous()}, str(folder / f"{name}.safetensors"))
        return io.NodeOutput()


class TestPackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [TinyCheckpoint, SamplingProbe, SaveImageTensor]


async def comfy_entrypoint() -> TestPackExtension:
    return TestPackExtension()
