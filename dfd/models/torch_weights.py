"""Read a PyTorch state dict (a `.pth` file) as numpy arrays, without torch and without running pickled code.

    read_state_dict(path) -> {name: np.ndarray}   # in the file's order (PyTorch's module order)

A `.pth` file is a pickle, and unpickling calls whatever the file names: `torch.load(weights_only=False)`
on a file from the internet runs its code. This reader's unpickler knows only what a tensor state dict
needs (an OrderedDict, torch's tensor-rebuild function and its typed storages) and refuses every other
class, so a file can hand it nothing but numbers. Both of torch.save's formats are read: the zip archive
(torch >= 1.6: `*/data.pkl` plus one member per storage) and the older stream (pickled magic number,
protocol, system info, the state dict, the storage keys, then each storage's bytes), which is the format
of torchvision's released ImageNet files such as `mobilenet_v2-b0353104.pth`.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch's typed storage classes (the names pickles refer to) → numpy dtypes. bfloat16 has no numpy dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    """One storage's elements; filled after unpickling in the legacy format (its bytes come afterwards)."""

    def __init__(self, dtype, numel: int):
        self.dtype = np.dtype(dtype)
        self.numel = int(numel)
        self.array: np.ndarray | None = None


class _TensorRef:
    """What torch._utils._rebuild_tensor_v2 would build, materialised once every storage is read."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array
        if not self.size:
            return np.array(flat[self.offset])
        extent = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if min(self.size) > 0 and extent > flat.size:
            raise ValueError(f"a tensor of shape {self.size} reaches past its storage of {flat.size} elements")
        strides = [s * flat.itemsize for s in self.stride]
        return np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size, strides=strides).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): name for name in _STORAGE_DTYPES},
}


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, storage_for):
        super().__init__(file)
        self._storage_for = storage_for   # (storage class name, key, numel) -> _Storage

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a tensor state dict never holds "
                                         f"(a .pth file can run code when unpickled: dfd reads tensors only)")
        return _ALLOWED[(module, name)]

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent record {saved_id!r:.80}")
        storage_class, key, _location, numel = saved_id[1:5]
        if storage_class not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type {storage_class!r}")
        storage = self._storage_for(storage_class, str(key), numel)
        if len(saved_id) > 5 and saved_id[5] is not None:   # legacy views: (view key, offset, size)
            raise pickle.UnpicklingError("storage views (files saved by torch < 0.4) are not supported")
        return storage


def _read_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError("a zip file without exactly one */data.pkl is not a torch.save archive")
        prefix = pickles[0][: -len("data.pkl")]
        storages = {}

        def storage_for(storage_class, key, numel):
            if key not in storages:
                storage = _Storage(_STORAGE_DTYPES[storage_class], numel)
                data = archive.read(f"{prefix}data/{key}")
                if len(data) < storage.numel * storage.dtype.itemsize:
                    raise ValueError(f"storage {key} holds {len(data)} bytes, fewer than its "
                                     f"{storage.numel} elements need")
                storage.array = np.frombuffer(data, storage.dtype, count=storage.numel)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as handle:
            return _TensorOnlyUnpickler(io.BytesIO(handle.read()), storage_for).load()


def _read_legacy(path: Path) -> dict:
    storages = {}

    def storage_for(storage_class, key, numel):
        return storages.setdefault(key, _Storage(_STORAGE_DTYPES[storage_class], numel))

    with open(path, "rb") as handle:
        header = _TensorOnlyUnpickler(handle, storage_for)
        if header.load() != _LEGACY_MAGIC:
            raise ValueError("it is neither a zip archive nor torch's older format (no magic number)")
        if header.load() != _LEGACY_PROTOCOL:
            raise ValueError("its torch serialization protocol is not 1001")
        header.load()   # system info: endianness and type sizes, little-endian on every platform torch ships
        result = _TensorOnlyUnpickler(handle, storage_for).load()
        keys = _TensorOnlyUnpickler(handle, storage_for).load()
        for key in keys:
            storage = storages[str(key)]
            count = int.from_bytes(handle.read(8), "little")
            data = handle.read(count * storage.dtype.itemsize)
            if count != storage.numel or len(data) != count * storage.dtype.itemsize:
                raise ValueError(f"storage {key} is truncated or damaged")
            storage.array = np.frombuffer(data, storage.dtype)
    return result


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of PyTorch state-dict file `path` as {name: numpy array}, in the file's order.

    ValueError naming the file for anything else: another pickle, a damaged or truncated file, a file
    whose pickle names a class a state dict never holds.
    """
    path = Path(path)
    try:
        result = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
        if not isinstance(result, dict):
            raise ValueError(f"it holds a {type(result).__name__}, not a state dict")
        arrays = {}
        for name, value in result.items():
            if not isinstance(value, _TensorRef):
                raise ValueError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
            arrays[str(name)] = value.to_numpy()
        return arrays
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError,
            zipfile.BadZipFile, OverflowError, MemoryError) as error:
        raise ValueError(f"{path} is not a readable PyTorch state dict (.pth): {error}") from None
