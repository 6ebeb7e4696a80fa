"""The paper's numbers (Ma et al., "Magic-Me", arXiv 2402.09368, section 5: 24 subjects x 25 prompts x 4 seeds,
raw cosine similarities), kept here so a report can print them beside ours without any other file."""

from __future__ import annotations

PAPER_METRICS = ("dino", "clip_i", "clip_t", "temporal_consistency")
LABELS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "temporal_consistency": "Temp. consist.",
          "motion": "Motion"}

# Table 1: methods. The baselines' other columns are not transcribed here (None).
TABLE1 = {
    "VCD": {"dino": 0.585, "clip_i": 0.747, "clip_t": 0.315, "temporal_consistency": 0.835},
    "DreamBooth": {"dino": 0.530},
    "LoRA": {"dino": 0.522},
    "IP-Adapter-Face": {"dino": 0.455},
}
# Table 2: the 3D noise prior's gamma (full pipeline).
GAMMA = {
    0.0: {"dino": 0.560, "clip_i": 0.745, "clip_t": 0.310, "temporal_consistency": 0.797},
    0.1: {"dino": 0.585, "clip_i": 0.747, "clip_t": 0.315, "temporal_consistency": 0.835},
    0.2: {"dino": 0.583, "clip_i": 0.816, "clip_t": 0.280, "temporal_consistency": 0.861},
}
# Table 3: after each stage (gamma 0.1).
STAGES = {
    "t2v": {"dino": 0.539, "clip_i": 0.721, "clip_t": 0.321, "temporal_consistency": 0.826},
    "face": {"dino": 0.551, "clip_i": 0.752, "clip_t": 0.322, "temporal_consistency": 0.825},
    "tiled": {"dino": 0.585, "clip_i": 0.747, "clip_t": 0.315, "temporal_consistency": 0.835},
}
STAGE_LABELS = {"t2v": "after T2V VCD", "face": "after Face VCD", "tiled": "after Tiled VCD"}
# The setting the paper's main results use: the values each ablation holds fixed.
PAPER_SETTING = {"gamma": 0.1, "stage": "tiled", "masked": True}
