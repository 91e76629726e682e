"""A pretend GPU made of NumPy, so the device code path can be tested without one.

CuPy keeps arrays in GPU memory and refuses to mix them with host NumPy arrays:
`cupy_array + numpy_array` raises TypeError, and `numpy.asarray(cupy_array)` raises
too. Code that forgets a transfer therefore runs fine on NumPy and breaks on a GPU.
This module gives NumPy the same manners. Its arrays (`FakeDeviceArray`) wrap a
NumPy array, compute with NumPy, and:

- refuse any operand that is a host `numpy.ndarray` (scalars are fine, as in CuPy);
- refuse implicit conversion to NumPy (`np.asarray(a)`, `np.save`, matplotlib);
- count every host->device copy, device->host copy and scalar read (`float(a)`,
  which on a GPU waits for all queued work), in `namespace.counters`, and every
  array a call allocates ("alloc": not views, not 0-d results), which a training step
  must not do after its first (CuPy's pool would serve it, but a captured CUDA graph cannot);
- draw random numbers through `random.default_rng(seed)`, a `FakeGenerator` with the
  calls of CuPy's Generator, so the backend's draws run the same line as on CuPy.

Only the explicit doors (`asarray`/`array` in, `asnumpy`/`.get()` out) cross over.
It checks *where* arrays live, not CUDA: it is no faithful CuPy and no faster than NumPy.

A supported backend, for anyone changing numpyvae without a GPU at hand: run
`numpyvae train --backend fakegpu` (or `VAE(..., backend="fakegpu")`), and a host array
that would have crept into the device path raises here as it would on a GPU; read
`namespace.counters` to see how many transfers and sync points a piece of code makes.
"""
from __future__ import annotations

import collections

import numpy as np

_MIX_MESSAGE = ("fake GPU: a host numpy.ndarray was mixed with device arrays; "
                "move it with backend.to_device() first (CuPy would raise here too)")


class FakeDeviceArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A NumPy array that pretends to live on a GPU."""

    __slots__ = ("_data",)

    def __init__(self, data):
        self._data = data

    # plain attributes, as on cupy.ndarray
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    T = property(lambda self: FakeDeviceArray(self._data.T))

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"fakegpu.{self._data!r}"

    def __getitem__(self, key):
        return _wrap(self._data[_unwrap(key)])

    def __setitem__(self, key, value):
        self._data[_unwrap(key)] = _unwrap(value)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("fake GPU: implicit conversion to a NumPy array is not allowed; "
                        "use backend.to_host() (CuPy would raise here too)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*(_unwrap(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _call(func, args, kwargs)

    # reading a number off the device waits for the GPU: count it
    def _read(self, convert):
        namespace.counters["sync"] += 1
        return convert(self._data)

    def __float__(self):
        return self._read(float)

    def __int__(self):
        return self._read(int)

    def __bool__(self):
        return self._read(bool)

    def __index__(self):
        return self._read(lambda d: d.__index__())

    def item(self):
        return self._read(lambda d: d.item())

    def get(self):
        """Device -> host copy, as cupy.ndarray.get()."""
        namespace.counters["to_host"] += 1
        return self._data.copy()

    def __getattr__(self, name):
        # methods such as sum, reshape, astype, fill, ravel: run on the data, keep results on the device.
        # Never hand out protocol attributes (__array_interface__, buffers): NumPy would read
        # the host data through them and the fake device would leak.
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(self._data, name)
        if callable(attribute):
            return lambda *args, **kwargs: _call(attribute, args, kwargs)
        return _wrap(attribute)


def _unwrap(value):
    """Device arrays -> their data; host ndarrays -> refused; containers recursively; scalars as they are."""
    if isinstance(value, FakeDeviceArray):
        return value._data
    if isinstance(value, np.ndarray):
        raise TypeError(_MIX_MESSAGE)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, slice):
        return value
    return value


def _allocated(array):
    """Count a device array that owns fresh memory (0-d results, such as a loss sum, are not counted)."""
    if array.ndim > 0:
        namespace.counters["alloc"] += 1
    return array


def _wrap(value):
    """NumPy results -> device arrays (a NumPy scalar becomes a 0-d array, as CuPy's reductions give)."""
    if isinstance(value, np.ndarray):
        wrapped = FakeDeviceArray(value)
        return wrapped if value.base is not None else _allocated(wrapped)   # a view, or new memory
    if isinstance(value, np.generic):
        return FakeDeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _call(function, args, kwargs):
    out = kwargs.get("out")
    result = function(*_unwrap(tuple(args)), **{k: _unwrap(v) for k, v in kwargs.items()})
    if isinstance(out, FakeDeviceArray):
        return out
    return _wrap(result)


class _Namespace:
    """Stands in for the `cupy` module: NumPy's functions, with device arrays in and out."""

    ndarray = FakeDeviceArray

    def __init__(self):
        self.counters = collections.Counter()

    def asarray(self, value, dtype=None):
        if isinstance(value, FakeDeviceArray):
            return value if dtype is None or value.dtype == dtype else value.astype(dtype)
        self.counters["to_device"] += 1
        return FakeDeviceArray(np.array(value, dtype=dtype, copy=True))  # a device copy is separate memory

    array = asarray

    def asnumpy(self, value):
        if not isinstance(value, FakeDeviceArray):
            return np.asarray(value)
        return value.get()

    @property
    def random(self):
        """Stands in for `cupy.random`: default_rng(seed) gives a FakeGenerator."""
        return _RandomModule


    @property
    def lib(self):
        """`xp.lib.stride_tricks.as_strided`, as cupy.lib has it: a view of a device array stays on the device."""
        return _lib

    def __getattr__(self, name):
        attribute = getattr(np, name)
        if isinstance(attribute, type) or not callable(attribute):
            return attribute  # dtypes, constants, submodules
        return lambda *args, **kwargs: _call(attribute, args, kwargs)


class FakeGenerator:
    """Stands in for CuPy's `cupy.random.Generator`: the same calls, drawing into device arrays.

    It shares NumPy's generator (the same seed gives NumPy's numbers), and, like CuPy's, takes
    `out=` only as a device array of the requested dtype and shape, filled in place, and, like
    CuPy 14.2's, fills all of `out` with one number when `random` is called without a size.
    """

    def __init__(self, seed):
        self._numpy = np.random.default_rng(seed)

    def _draw(self, method, size, dtype, out):
        if out is None:
            return _allocated(FakeDeviceArray(getattr(self._numpy, method)(size, dtype=dtype)))
        if not isinstance(out, FakeDeviceArray):
            raise TypeError("fake GPU: out= must be a device array (CuPy would raise here too)")
        if np.dtype(dtype) != out.dtype:
            raise TypeError(f"Supplied output array has the wrong type. Expected {np.dtype(dtype).name}, "
                            f"got {out.dtype.name}")
        if size is not None and tuple(np.atleast_1d(size)) != out.shape:
            raise ValueError("size must match out.shape when used together")
        if size is None and method == "random":
            # as CuPy 14.2's Generator.random does (cupy/random/_generator_api.pyx): without a size it
            # draws one number and copies it into every element of out
            out._data[...] = self._numpy.random(dtype=dtype)
            return out
        getattr(self._numpy, method)(dtype=dtype, out=out._data)
        return out

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._draw("standard_normal", size, dtype, out)

    def random(self, size=None, dtype=np.float64, out=None):
        return self._draw("random", size, dtype, out)


class _RandomModule:
    default_rng = FakeGenerator


class _StrideTricks:
    @staticmethod
    def as_strided(x, shape=None, strides=None):
        return _wrap(np.lib.stride_tricks.as_strided(_unwrap(x), shape, strides))


class _Lib:
    stride_tricks = _StrideTricks


_lib = _Lib()
namespace = _Namespace()
