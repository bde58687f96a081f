"""The research code's one pickle reader accepts numpy arrays only (tests/test_reliability.py keeps
every other module from importing a pickle library)."""

from __future__ import annotations

import os

import pytest


def test_the_experiments_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    import gzip
    import pickle

    import numpy as np
    from iis_paper.data import _read_package_pickle

    arrays = tmp_path / "arrays.gz"
    with gzip.open(arrays, "wb") as stream:
        pickle.dump(np.arange(6, dtype=np.uint8).reshape(2, 3), stream)
    assert _read_package_pickle(arrays).tolist() == [[0, 1, 2], [3, 4, 5]]
    hostile = tmp_path / "hostile.gz"
    with gzip.open(hostile, "wb") as stream:
        pickle.dump(Exploit(), stream)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        _read_package_pickle(hostile)


class Exploit:
    """A pickle that would run a command when loaded by a plain unpickler."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))
