"""The FAISS index's labels (position -> document id, -1 dead) and their inverse (id -> position
of the live document), in numpy arrays.

A Python dict from id to position costs about 100 bytes an entry (two int objects and a slot):
~100 MB at 1M documents, and rebuilding it on open walks every label in Python. Here the inverse
is two sorted int64 arrays (16 bytes an id) searched with ``searchsorted``; ids appended since the
last sort sit in a second, smaller sorted pair that is merged in once it outgrows
``_RECENT_UP_TO`` or an eighth of the main one. Deleting a document only marks its label -1: an
entry of the inverse counts while the label at its position still names its id.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_RECENT_UP_TO = 65536  # ids appended before a full re-sort (1M ids sort in ~70 ms)

Ids = npt.NDArray[np.int64]


class PositionMap:
    """Labels of the index positions and where each live id sits. Not thread-safe."""

    labels: Ids  # position -> id, -1 dead
    _main: tuple[Ids, Ids]  # live ids ascending, their positions
    _recent: tuple[Ids, Ids]  # ids appended since, ascending, their positions
    _n_live: int
    version: int  # counts changes, so that what is derived from the positions can be kept

    def __init__(self, labels: Ids | None = None) -> None:
        self.reset(np.empty(0, dtype=np.int64) if labels is None else labels)

    def reset(self, labels: Ids) -> None:
        """Take ``labels`` (copied) as the whole index's and sort its live ids."""
        self.labels = np.array(labels, dtype=np.int64)
        self.version = 0
        self._sort_all()

    def append(self, ids: Ids) -> None:
        """Ids of vectors appended to the index, none of them live already."""
        start = len(self.labels)
        self.version += 1
        self.labels = np.concatenate([self.labels, ids.astype(np.int64)])
        self._n_live += len(ids)
        positions = np.arange(start, start + len(ids), dtype=np.int64)
        self._recent = _sorted_pair(
            np.concatenate([self._recent[0], ids]), np.concatenate([self._recent[1], positions])
        )
        if len(self._recent[0]) > max(_RECENT_UP_TO, len(self._main[0]) // 8):
            self._sort_all()

    def kill(self, ids: Ids) -> None:
        """Mark the positions of these live ids dead; KeyError names one that is not live."""
        positions = self.find(ids)
        if (positions < 0).any():
            raise KeyError(int(ids[np.argmax(positions < 0)]))
        self.version += 1
        self.labels[positions] = -1
        self._n_live -= len(np.unique(positions))

    def find(self, ids: Ids) -> Ids:
        """The position of each live id, -1 for ids not stored (or deleted)."""
        ids = np.asarray(ids, dtype=np.int64)
        found = np.full(len(ids), -1, dtype=np.int64)
        for sorted_ids, positions in (self._main, self._recent):  # recent ones win: newer
            if not len(sorted_ids):
                continue
            # the last of equal ids: the latest position of an id appended again
            k = np.maximum(np.searchsorted(sorted_ids, ids, side="right") - 1, 0)
            at = positions[k]
            live = (sorted_ids[k] == ids) & (self.labels[at] == ids)
            found[live] = at[live]
        return found

    def __len__(self) -> int:
        """How many ids are live."""
        return self._n_live

    def __contains__(self, id: int) -> bool:
        return bool(self.find(np.array([id], dtype=np.int64))[0] >= 0)

    def _sort_all(self) -> None:
        live = np.flatnonzero(self.labels >= 0)
        self._main = _sorted_pair(self.labels[live], live.astype(np.int64))
        self._recent = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        self._n_live = len(live)


def _sorted_pair(ids: Ids, positions: Ids) -> tuple[Ids, Ids]:
    """Ids ascending with their positions; of an id present twice the later position is last."""
    order = np.argsort(ids, kind="stable")
    return ids[order], positions[order]
