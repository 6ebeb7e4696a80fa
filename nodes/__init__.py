"""ComfyUI nodes of the pack, one module per stage; each adapts ComfyUI objects to vcd_core."""

from comfy_api.latest import io

from .evaluate import VCDEvaluate, VCDEvaluateIdentities
from .face import VCDFaceDetect, VCDFaceRefine
from .face_tracks import VCDFaceRefineTracks
from .identity import VCDIdentityEncode, VCDLoadIdentity, VCDTrainIdentity
from .noise import VCD3DGaussianNoise, VCD3DGaussianNoiseLatent
from .regional import VCDRegionalIdentity
from .segment import VCDPromptSegment
from .tiled import VCDTiledRefine
from .tracks import VCDFaceTracks

NODES: list[type[io.ComfyNode]] = [
    VCD3DGaussianNoise,
    VCD3DGaussianNoiseLatent,
    VCDFaceDetect,
    VCDFaceRefine,
    VCDFaceTracks,
    VCDFaceRefineTracks,
    VCDTiledRefine,
    VCDPromptSegment,
    VCDTrainIdentity,
    VCDLoadIdentity,
    VCDIdentityEncode,
    VCDRegionalIdentity,
    VCDEvaluate,
    VCDEvaluateIdentities,
]
