"""Non-maximum suppression shared by the detectors (plain numpy, deterministic)."""

from __future__ import annotations

import numpy as np


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep their input order (stable)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """IoU of `box` (4,) with each row of `boxes` (N, 4), boxes as x1, y1, x2, y2.

    `offset=1` counts pixels inclusively (the legacy convention of the SCRFD/RetinaFace
    reference, which we follow there so our detections match it).
    """
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(0.0, xx2 - xx1 + offset) * np.maximum(0.0, yy2 - yy1 + offset)
    area = (box[2] - box[0] + offset) * (box[3] - box[1] + offset)
    areas = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, offset: float = 0.0) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first. A box is dropped when its
    IoU with an already kept box is above `iou_threshold`."""
    order = score_order(scores)
    boxes = np.asarray(boxes, dtype=np.float64)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        overlap = iou_one_to_many(boxes[best], boxes[rest], offset)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe-style weighted NMS: each cluster of boxes overlapping the best remaining one
    (IoU above the threshold) is replaced by the score-weighted mean of its boxes and key
    points, keeping the best score. Steadier than greedy NMS on dense single-scale anchors.

    Returns (boxes (K,4), scores (K,), points (K,P,2)), best score first.
    """
    order = score_order(scores)
    boxes64 = np.asarray(boxes, dtype=np.float64)
    points64 = np.asarray(points, dtype=np.float64)
    out_boxes, out_scores, out_points = [], [], []
    while order.size:
        best = int(order[0])
        overlap = iou_one_to_many(boxes64[best], boxes64[order])
        cluster = order[overlap > iou_threshold]
        if cluster.size == 0:  # degenerate (empty) box: keep it alone
            cluster = order[:1]
        weights = np.asarray(scores, dtype=np.float64)[cluster]
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(cluster.size, 1 / cluster.size)
        out_boxes.append(weights @ boxes64[cluster])
        out_points.append(np.tensordot(weights, points64[cluster], axes=1))
        out_scores.append(float(scores[best]))
        order = order[overlap <= iou_threshold]
        order = order[order != best]
    if not out_boxes:
        p = points.shape[1] if points.ndim == 3 else 0
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, p, 2))
    return np.stack(out_boxes), np.asarray(out_scores), np.stack(out_points)
