"""Face boxes per frame with no downloaded weights (OpenCV's Haar cascade), or a YOLO face model file.

Every frame gets a mask, empty where no face is found, so the batch never shrinks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .geometry import Box

__all__ = ["uint8_rgb", "haar_faces", "yolo_faces", "largest_box", "boxes_to_masks"]


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise RuntimeError("the default face detector needs OpenCV: pip install 'opencv-python-headless<5'") from exc
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 dropped them): "
            "pip install 'opencv-python-headless<5', or wire a face MASK from another node."
        )
    return cv2


def uint8_rgb(frame: torch.Tensor) -> np.ndarray:
    """A ``[H, W, C]`` float frame as the ``uint8`` RGB array detectors read: clamped to 0..1, times 255, truncated."""
    return (frame[..., :3].clamp(0, 1) * 255).byte().cpu().numpy()


def haar_faces(images: torch.Tensor, min_size_fraction: float = 0.05) -> list[list[Box]]:
    """Frontal faces in each ``[H, W, C]`` frame of ``images`` (floats 0..1), largest first."""
    cv2 = _cv2()
    detector = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    found = []
    for frame in images:
        gray = cv2.cvtColor(uint8_rgb(frame), cv2.COLOR_RGB2GRAY)
        side = max(16, int(min(gray.shape) * min_size_fraction))
        rects = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        boxes = [Box(int(y), int(y + h), int(x), int(x + w)) for x, y, w, h in np.asarray(rects).reshape(-1, 4)]
        found.append(sorted(boxes, key=lambda b: -b.height * b.width))
    return found


def yolo_faces(images: torch.Tensor, model_path: str, confidence: float = 0.35) -> list[list[Box]]:
    """Faces from an Ultralytics YOLO face model (e.g. ``face_yolov8m.pt`` in ``models/ultralytics/bbox``),
    in the model's order (most confident first); ``largest_box`` picks by size."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise RuntimeError("YOLO face models need the optional extra: pip install ultralytics") from exc
    model = YOLO(model_path)
    found = []
    for frame in images:
        array = uint8_rgb(frame)[..., ::-1]  # RGB -> BGR
        result = model.predict(array, conf=confidence, verbose=False)[0]
        xyxy = result.boxes.xyxy.cpu().numpy() if result.boxes is not None else np.zeros((0, 4))
        found.append([Box(int(y0), int(y1), int(x0), int(x1)) for x0, y0, x1, y1 in xyxy])
    return found


def largest_box(boxes: list[Box]) -> Box | None:
    """The box of largest area (the first of equals), whatever order the detector listed them in; None if none."""
    return max(boxes, key=lambda b: b.height * b.width, default=None)


def boxes_to_masks(boxes: list[list[Box]], height: int, width: int, largest_only: bool = False) -> torch.Tensor:
    """``[F, H, W]`` masks, 1 inside the largest (``largest_only``) or every box of each frame."""
    masks = torch.zeros((len(boxes), height, width))
    for i, frame_boxes in enumerate(boxes):
        for box in ([largest_box(frame_boxes)] if largest_only and frame_boxes else frame_boxes):
            masks[i, box.y0:box.y1, box.x0:box.x1] = 1.0
    return masks
