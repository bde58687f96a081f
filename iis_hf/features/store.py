"""Features on disk, once, in half precision; read memory-mapped, chunk by chunk.

A store is a plain safetensors file (`features`: (N, D) float16, optional `labels`: (N,) int64),
so `safetensors.safe_open` reads it too. `FeatureStore` maps it read-only and hands out float32
chunks; after each chunk it tells the kernel to drop those pages from the process
(`madvise(MADV_DONTNEED)`), and random rows (training batches) are read with `pread`, so scoring
ImageNet-sized features keeps a small resident set instead of growing to the size of the file.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import torch

from ..files import temporary_sibling

HEADER_ALIGNMENT = 8
PAGE = mmap.PAGESIZE


class FeatureStore:
    """Read-only, memory-mapped view of a feature file written by `write_feature_store`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"feature store {self.path} does not exist")
        with open(self.path, "rb") as file:
            try:
                (header_size,) = struct.unpack("<Q", file.read(8))
                header = json.loads(file.read(header_size))
            except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{self.path} is not a safetensors feature store ({err})") from err
            self._file = open(self.path, "rb")  # noqa: SIM115 - lives as long as the mapping
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._data_start = 8 + header_size
        entry = header.get("features")
        if not entry or entry.get("dtype") != "F16" or len(entry.get("shape", [])) != 2:
            raise ValueError(f"{self.path} holds no (N, D) float16 'features' tensor")
        self.num_rows, self.dim = (int(v) for v in entry["shape"])
        start, stop = entry["data_offsets"]
        if stop - start != self.num_rows * self.dim * 2 or self._data_start + stop > len(self._map):
            raise ValueError(f"{self.path} is truncated or inconsistent")
        self._features_offset = self._data_start + start
        self.features: npt.NDArray[np.float16] | None = np.frombuffer(
            self._map, dtype=np.float16, count=self.num_rows * self.dim, offset=self._features_offset
        ).reshape(self.num_rows, self.dim)
        self.labels = None
        if "labels" in header:
            lo, hi = header["labels"]["data_offsets"]
            raw = np.frombuffer(self._map, dtype=np.int64, count=(hi - lo) // 8, offset=self._data_start + lo)
            self.labels = torch.from_numpy(raw.copy())

    def __len__(self) -> int:
        return self.num_rows

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.dim)

    @property
    def nbytes(self) -> int:
        return self.num_rows * self.dim * 2

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a float32 tensor; their pages are released from this process."""
        if self.features is None:
            raise ValueError(f"feature store {self.path} is closed")
        out = torch.from_numpy(self.features[start:stop].astype(np.float32))
        self._release(start, stop)
        return out

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Arbitrary rows as float32, read with `pread` rather than through the mapping.

        A fault on the mapping maps a whole page-cache folio (up to megabytes on current kernels),
        so a single batch of 1024 random rows mapped a 460 MB store entirely; reading the rows into
        a buffer keeps the resident set at the size of the batch.
        """
        positions = np.asarray(index, dtype=np.int64)
        out = np.empty((positions.shape[0], self.dim), dtype=np.float16)
        row_bytes = self.dim * 2
        descriptor = self._file.fileno()
        for i, row in enumerate(positions.tolist()):
            os.preadv(descriptor, [out[i].data], self._features_offset + row * row_bytes)
        return torch.from_numpy(out.astype(np.float32))

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.num_rows, size):
            yield start, self.chunk(start, min(start + size, self.num_rows))

    def release_all(self) -> None:
        self._release(0, self.num_rows)

    def _release(self, start: int, stop: int) -> None:
        begin = self._features_offset + start * self.dim * 2
        end = self._features_offset + stop * self.dim * 2
        begin -= begin % PAGE
        if end > begin and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, begin, min(end - begin, len(self._map) - begin))

    def close(self) -> None:
        self.features = None
        self._map.close()
        self._file.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, rows={self.num_rows}, dim={self.dim})"


def write_feature_store(
    path: str | os.PathLike,
    chunks: Iterable[torch.Tensor | np.ndarray],
    num_rows: int,
    dim: int,
    labels: torch.Tensor | np.ndarray | None = None,
) -> FeatureStore:
    """Stream (rows, D) chunks into a float16 safetensors file, atomically; return it opened."""
    if labels is not None:
        labels = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
        if labels.shape != (num_rows,):
            raise ValueError(f"labels must have shape ({num_rows},), got {labels.shape}")
    writer = FeatureStoreWriter(path, num_rows, with_labels=labels is not None, dim=dim)
    try:
        for chunk in chunks:
            writer.append(chunk)
        return writer.finish(labels)
    finally:
        writer.abort()


class FeatureStoreWriter:
    """Rows appended in order, chunk by chunk, to a float16 store: memory holds one chunk, never the
    data set. The file appears at `path` only once `finish` has checked every row (atomically)."""

    def __init__(self, path: str | os.PathLike, num_rows: int, with_labels: bool, dim: int | None = None):
        self.path, self.num_rows, self.with_labels, self.dim = Path(path), int(num_rows), with_labels, dim
        self.written = 0
        self._labels: list[np.ndarray] = []
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(temporary_sibling(self.path))
        self._file: BinaryIO | None = None

    def append(
        self, chunk: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None = None
    ) -> None:
        """Write the next rows (float32 in, checked, stored as float16) and keep their labels."""
        array = chunk.detach().cpu().numpy() if torch.is_tensor(chunk) else np.asarray(chunk)
        if self.dim is None and array.ndim == 2:
            self.dim = int(array.shape[1])
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"feature chunks must be (rows, {self.dim}), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("features contain NaN or inf values")
        if array.size and np.abs(array).max() > np.finfo(np.float16).max:
            raise ValueError("features exceed the float16 range; rescale them before storing")
        if self._file is None:
            self._file = self._stack.enter_context(open(self._tmp, "wb"))  # noqa: SIM115 - closed by finish/abort
            self._file.write(self._header())
        self._file.write(array.astype(np.float16).tobytes())
        self.written += array.shape[0]
        if labels is not None:
            self._labels.append(np.asarray(labels, dtype=np.int64).reshape(-1))

    def _header(self) -> bytes:
        assert self.dim is not None
        feature_bytes = self.num_rows * self.dim * 2
        header: dict = {
            "__metadata__": {"format": "pt", "writer": "iis-hf"},
            "features": {
                "dtype": "F16",
                "shape": [self.num_rows, self.dim],
                "data_offsets": [0, feature_bytes],
            },
        }
        if self.with_labels:
            header["labels"] = {
                "dtype": "I64",
                "shape": [self.num_rows],
                "data_offsets": [feature_bytes, feature_bytes + self.num_rows * 8],
            }
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % HEADER_ALIGNMENT)
        return struct.pack("<Q", len(encoded)) + encoded

    def finish(self, labels: torch.Tensor | np.ndarray | None = None) -> FeatureStore:
        """Check the row count, write the labels (given, or those appended), rename into place, open."""
        if self.written != self.num_rows:
            raise ValueError(f"got {self.written} feature rows, expected {self.num_rows}")
        if self._file is None:
            raise ValueError("no feature rows were written")
        if self.with_labels:
            values = (
                np.asarray(labels, dtype=np.int64) if labels is not None else np.concatenate(self._labels)
            )
            if values.shape != (self.num_rows,):
                raise ValueError(f"labels must have shape ({self.num_rows},), got {values.shape}")
            self._file.write(np.ascontiguousarray(values).tobytes())
        self._file.close()
        os.replace(self._tmp, self.path)
        self._stack.close()
        return FeatureStore(self.path)

    def abort(self) -> None:
        """Remove the temporary file (nothing when `finish` has renamed it)."""
        self._stack.close()
