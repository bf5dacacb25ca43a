"""Index facts of the 468-point MediaPipe FaceMesh topology (public, from MediaPipe's
`face_mesh_connections`), and the triangulation the mesh swapper warps with.

"Left"/"right" follow MediaPipe's naming (the subject's left eye is on the image's right).
"""

from __future__ import annotations

import cv2
import numpy as np

NUM_LANDMARKS = 468

# Closed contours, in drawing order.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
RIGHT_EYEBROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_EYEBROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)

# Single points.
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
RIGHT_CHEEK_EDGE = 234  # the face oval's image-left extreme at cheek level
LEFT_CHEEK_EDGE = 454


def delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (T, 3) int32 over 2-D `points` (N, 2), as indices into `points`.

    Degenerate (near zero-area) triangles are dropped.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    lo = pts.min(axis=0) - 2.0
    hi = pts.max(axis=0) + 2.0
    subdiv = cv2.Subdiv2D((int(np.floor(lo[0])), int(np.floor(lo[1])),
                           int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1))
    # Subdiv2D merges coincident points; feed each point once and map back by nearest.
    subdiv.insert([(float(x), float(y)) for x, y in pts])
    tri = subdiv.getTriangleList().reshape(-1, 3, 2)
    inside = np.all((tri >= lo) & (tri <= hi), axis=(1, 2))  # drop the virtual outer vertices
    tri = tri[inside]
    d = ((tri.reshape(-1, 1, 2) - pts[None]) ** 2).sum(-1)
    idx = d.argmin(axis=1).reshape(-1, 3).astype(np.int32)
    a = pts[idx[:, 1]] - pts[idx[:, 0]]
    b = pts[idx[:, 2]] - pts[idx[:, 0]]
    area = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / 2
    keep = (area > 1e-3) & (idx[:, 0] != idx[:, 1]) & (idx[:, 1] != idx[:, 2]) & (idx[:, 0] != idx[:, 2])
    return np.ascontiguousarray(idx[keep])
