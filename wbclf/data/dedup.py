"""Near-duplicate images: a rotation- and flip-invariant fingerprint and an all-pairs search.

The fingerprint of an image is read on the disc inscribed in it, around its centre, in polar
coordinates (rings x angles). Rotating the image about its centre shifts every ring along
the angle axis and a mirror image reverses it; the magnitude of each ring's Fourier series
over the angle is unchanged by both. So the magnitudes of the first few angular frequencies
of each ring, for grey level and two colour-opponent channels, are the same for a leaf and
its 90/180/270-degree, 30-degree and flipped copies (the offline augmentations of the plant
set), while blurring before sampling makes them robust to JPEG re-encoding and small
resizes. Two images are near-duplicates when their normalized fingerprints are close:
``distance = 1 - cosine similarity`` (0 = identical).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

SIDE = 64  # the fingerprint is read from the image scaled to SIDE x SIDE
BLUR = 2.5  # px at SIDE: removes JPEG blocks and noise before sampling
RINGS = 24  # radial samples from the centre to 0.95 of the inscribed radius
ANGLES = 64  # angular samples per ring
FREQS = 8  # |Fourier coefficient| of angular frequencies 0..FREQS-1 per ring and channel
DEFAULT_THRESHOLD = 0.005  # measured on toy-leaves: docs/DATA_AUDIT.md
_PCA_DIMS = 16  # directions the pair search indexes
_PCA_SAMPLE = 20000  # fingerprints the directions are estimated from
# What a remembered result depends on: bump the version when the method changes.
FINGERPRINT_SETTINGS = {"version": 1, "side": SIDE, "blur": BLUR, "rings": RINGS,
                        "angles": ANGLES, "freqs": FREQS, "threshold": DEFAULT_THRESHOLD,
                        "pca_dims": _PCA_DIMS, "pca_sample": _PCA_SAMPLE}
_CHUNK = 1 << 20  # candidate pairs checked at a time


def fingerprint(image: np.ndarray) -> np.ndarray:
    """The L2-normalized fingerprint (float32) of an HWC uint8 RGB image."""
    if image.shape[0] != SIDE or image.shape[1] != SIDE:
        image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    rgb = cv2.GaussianBlur(image.astype(np.float32), (0, 0), BLUR)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # grey, red-green and yellow-blue: leaves of one crop differ mostly in colour and shape
    channels = np.stack([(r + g + b) / 3, r - g, (r + g) / 2 - b], axis=-1)
    centre = (SIDE / 2 - 0.5, SIDE / 2 - 0.5)
    # warpPolar: rows are angles, columns radii; the disc never reaches the corners, which
    # a rotation fills with made-up content
    polar = cv2.warpPolar(channels, (RINGS, ANGLES), centre, 0.95 * SIDE / 2,
                          cv2.INTER_LINEAR | cv2.WARP_POLAR_LINEAR)
    spectrum = np.abs(np.fft.rfft(polar, axis=0))[:FREQS]  # FREQS x RINGS x 3
    spectrum[0] /= np.sqrt(ANGLES)  # the ring mean would outweigh the shape terms
    features = spectrum.ravel()
    features -= features.mean()
    norm = float(np.linalg.norm(features))
    return (features / norm if norm > 0 else features).astype(np.float32)


def fingerprints(images: Iterable[np.ndarray | None], count: int) -> np.ndarray:
    """Stack the fingerprints of ``count`` images (HWC uint8 arrays; None, an image that did
    not decode, gets a zero row, which matches nothing)."""
    out = np.zeros((count, FREQS * RINGS * 3), np.float32)
    for i, image in enumerate(images):
        if image is not None:
            out[i] = fingerprint(np.asarray(image))
    return out


@dataclass(frozen=True)
class Pair:
    """Two near-duplicate images by their row in the fingerprint array."""

    a: int
    b: int
    distance: float


def near_pairs(prints: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[Pair]:
    """Every pair of rows whose fingerprints lie within ``threshold`` of each other, exactly.

    All pairs of 87k fingerprints by brute force are ~2e12 multiply-adds (minutes); instead
    the fingerprints are projected onto their first principal directions and a k-d tree
    lists the pairs that lie close there. A projection onto orthonormal directions never
    moves two points apart, so no pair within the threshold is missed; each candidate is
    then checked on the whole fingerprint.
    """
    n = len(prints)
    if n < 2:
        return []
    from scipy.spatial import cKDTree  # lazy: start-up time of the CLI

    radius = float(np.sqrt(2.0 * threshold))  # |a - b|^2 = 2 (1 - cos) for unit vectors
    centre, directions = _principal_directions(prints)
    projected = (prints - centre) @ directions
    candidates = cKDTree(projected).query_pairs(radius * (1 + 1e-6), output_type="ndarray")
    pairs: list[Pair] = []
    for start in range(0, len(candidates), _CHUNK):
        a, b = candidates[start:start + _CHUNK].T
        distance = 1.0 - np.einsum("ij,ij->i", prints[a], prints[b])
        for i in np.flatnonzero(distance <= threshold).tolist():
            first, second = sorted((int(a[i]), int(b[i])))
            pairs.append(Pair(first, second, max(0.0, float(distance[i]))))
    pairs.sort(key=lambda p: (p.distance, p.a, p.b))
    return pairs


def has_match(query: np.ndarray, reference: np.ndarray,
              threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """A bool per ``query`` row: is any ``reference`` fingerprint within ``threshold``?

    Exact, like :func:`near_pairs`: candidates from a k-d tree of the reference projected
    on principal directions, each checked on the whole fingerprint.
    """
    found = np.zeros(len(query), bool)
    if not len(query) or not len(reference):
        return found
    from scipy.spatial import cKDTree  # lazy: start-up time of the CLI

    radius = float(np.sqrt(2.0 * threshold))
    centre, directions = _principal_directions(np.concatenate([query, reference]))
    tree = cKDTree((reference - centre) @ directions)
    neighbours = tree.query_ball_point((query - centre) @ directions, radius * (1 + 1e-6))
    for i, rows in enumerate(neighbours):
        if rows:
            found[i] = bool((1.0 - reference[rows] @ query[i]).min() <= threshold)
    return found


def _principal_directions(prints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the first ``_PCA_DIMS`` principal directions (columns) of ``prints``."""
    n = len(prints)
    centre = prints.mean(axis=0)
    sample = prints[np.linspace(0, n - 1, min(n, _PCA_SAMPLE)).astype(np.int64)] - centre
    # eigenvectors of the small d x d scatter matrix: far quicker than an SVD of the sample
    _, vectors = np.linalg.eigh(sample.T.astype(np.float64) @ sample)
    return centre, vectors[:, ::-1][:, :_PCA_DIMS].astype(np.float32)
