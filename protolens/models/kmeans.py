"""K-Means for prototype building, through faiss when installed, scikit-learn otherwise; cluster scores.

Source: prototype-guided zero-shot segmentation, arXiv 2512.19957, step 2 (METHODS.md §1): the prototypes
P (K x D) are the K-Means centroids of the CLS embeddings of the training images, squared L2 distance,
many iterations and restarts (the reference: faiss, niter 350, nredo 30). Neither the features nor the
centroids are L2-normalised, and the clusters are not tied to labels.

The two libraries do not give the same centroids for the same seed: faiss seeds each restart by sampling
K points at random, scikit-learn by k-means++; both keep the restart of lowest inertia. Each is
reproducible for a given seed, input and thread count (bit-exact in the tests on this machine).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from protolens.core.errors import ParamError

LIBRARIES = ("auto", "faiss", "sklearn")
"""Values of the ``library`` argument of :func:`kmeans` (and of ``--kmeans``)."""


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes
    ----------
    centroids : numpy.ndarray
        (k, d) float32 cluster centres, not normalised.
    assignment : numpy.ndarray
        (n,) int64 index of the nearest centroid (squared L2) of each input row.
    inertia : float
        Sum over rows of the squared L2 distance to the assigned centroid (float64 sum).
    library : str
        ``"faiss"`` or ``"sklearn"``: the library that ran.
    """

    centroids: np.ndarray
    assignment: np.ndarray
    inertia: float
    library: str


def faiss_available() -> bool:
    """Whether ``import faiss`` would succeed (checked without importing it)."""
    return importlib.util.find_spec("faiss") is not None


def choose_library(library: str = "auto") -> str:
    """``"faiss"`` or ``"sklearn"`` for a ``library`` argument of :func:`kmeans`.

    ``auto`` is faiss when installed, else scikit-learn. Raises :class:`ParamError` for an unknown name, or
    for ``faiss`` when faiss is not installed (an explicit request never silently runs another library).
    """
    if library not in LIBRARIES:
        raise ParamError(f"--kmeans: {library!r} is not one of {', '.join(LIBRARIES)}")
    if library == "faiss" and not faiss_available():
        raise ParamError("--kmeans faiss: faiss is not installed (pip install 'protolens[faiss]'), "
                         "or use --kmeans sklearn / auto")
    if library == "auto":
        return "faiss" if faiss_available() else "sklearn"
    return library


def _check(x: np.ndarray, k: int, niter: int, nredo: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ParamError(f"k-means needs a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ParamError("k-means input holds NaN or infinite values")
    if k < 1:
        raise ParamError(f"--k: {k} clusters; give at least 1")
    if k > x.shape[0]:
        raise ParamError(f"--k: {k} clusters but only {x.shape[0]} embedded images; "
                         f"K-Means needs at least as many images as clusters (lower --k or add images)")
    if niter < 1 or nredo < 1:
        raise ParamError(f"--niter and --nredo must be at least 1 (got {niter}, {nredo})")
    return x


def _faiss(x: np.ndarray, k: int, seed: int, niter: int, nredo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import faiss

    model = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=False, verbose=False,
                         min_points_per_centroid=1,  # no warning for small sets
                         max_points_per_centroid=max(256, -(-x.shape[0] // k)))  # never subsample the images
    model.train(x)
    centroids = np.ascontiguousarray(model.centroids, dtype=np.float32).reshape(k, x.shape[1])
    distances, labels = model.index.search(x, 1)
    return centroids, labels[:, 0].astype(np.int64), distances[:, 0]


def _sklearn(x: np.ndarray, k: int, seed: int, niter: int, nredo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=nredo, max_iter=niter, random_state=seed).fit(x)
    centroids = np.ascontiguousarray(model.cluster_centers_, dtype=np.float32)
    labels = model.labels_.astype(np.int64)
    distances = ((x - centroids[labels]) ** 2).sum(axis=1)
    return centroids, labels, distances


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 350, nredo: int = 30,
           library: str = "auto") -> KMeansResult:
    """K-Means of the rows of ``x`` in squared L2 (arXiv 2512.19957, step 2: the prototypes P).

    Parameters
    ----------
    x : numpy.ndarray
        (n, d) embeddings, converted to float32; not normalised here (the method normalises nothing).
    k : int
        Number of clusters, 1 <= k <= n.
    seed : int
        Random seed: same seed, input and thread count give bit-identical centroids.
    niter : int
        Lloyd iterations per restart (faiss ``niter``, scikit-learn ``max_iter``; scikit-learn may stop
        earlier once converged).
    nredo : int
        Restarts; the one of lowest inertia is kept (faiss ``nredo``, scikit-learn ``n_init``).
    library : str
        ``"auto"`` (faiss when installed, else scikit-learn), ``"faiss"`` or ``"sklearn"``.
        faiss: ``faiss.Kmeans(d, k, niter, nredo, seed, spherical=False)``, random initial centroids,
        all points used (no subsampling). scikit-learn: ``KMeans(n_clusters=k, n_init=nredo,
        max_iter=niter, random_state=seed)``, k-means++ initial centroids.

    Returns
    -------
    KMeansResult
        Centroids (k, d) float32, assignment (n,) int64, inertia and the library that ran.

    Raises
    ------
    ParamError
        k < 1 or k > n, niter or nredo < 1, an empty or non-finite ``x``, an unknown library, or ``faiss``
        asked for but not installed.
    """
    x = _check(x, k, niter, nredo)
    name = choose_library(library)
    run = _faiss if name == "faiss" else _sklearn
    centroids, labels, distances = run(x, int(k), int(seed), int(niter), int(nredo))
    return KMeansResult(centroids, labels, float(np.sum(distances, dtype=np.float64)), name)


def cluster_purity(assignment: np.ndarray, labels: np.ndarray) -> float:
    """Cluster purity: the share of items whose class is the most frequent class of their cluster.

    purity = (1/n) * sum over clusters c of max over classes l of |{i : assignment_i = c, labels_i = l}|.
    1.0 when every cluster holds one class; it rises with the number of clusters (K = n gives 1.0), so read
    it together with the adjusted Rand index.

    Parameters
    ----------
    assignment : numpy.ndarray
        (n,) integer cluster of each item.
    labels : numpy.ndarray
        (n,) class of each item (any hashable values: ints or strings).

    Raises
    ------
    ValueError
        The arrays differ in length or are empty.
    """
    assignment, labels = np.asarray(assignment), np.asarray(labels)
    if assignment.shape != labels.shape or assignment.ndim != 1 or assignment.size == 0:
        raise ValueError(f"purity needs two equal, non-empty 1-D arrays, got {assignment.shape} and {labels.shape}")
    _, clusters = np.unique(assignment, return_inverse=True)
    _, classes = np.unique(labels, return_inverse=True)
    table = np.zeros((clusters.max() + 1, classes.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, classes), 1)
    return float(table.max(axis=1).sum() / assignment.size)


def adjusted_rand_index(assignment: np.ndarray, labels: np.ndarray) -> float:
    """Adjusted Rand index between clusters and classes (``sklearn.metrics.adjusted_rand_score``).

    1.0 for identical partitions, about 0 for a random one (can be negative). Raises ``ValueError`` for
    arrays of different lengths.
    """
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels), np.asarray(assignment)))
