"""The binary message format of the tracking server (``sam2s.serving.server``) and its client (``sam2s.serving.client``).

numpy only: no torch, and never pickle (a message holds JSON and raw numbers, nothing that runs
code when read). Every binary request and response body (media type
``application/octet-stream``) is one message::

    offset  size  content
    0       5     magic b"SAM2S"
    5       4     L: length of the JSON header in bytes, unsigned 32-bit little-endian
    9       L     the header: a UTF-8 JSON object (strict JSON: no NaN / Infinity)
    9 + L   ...   the array payloads, one after the other, in the order of header["arrays"];
                  nothing after the last one

The header is the sender's own fields plus the reserved key ``"arrays"``: one spec per array,
``{"dtype": name, "shape": [d0, d1, ...], "encoding": "packbits" | "raw"}``, with

* ``dtype`` from the allow-list ``bool``, ``uint8``, ``float32`` (nothing else is accepted);
* ``shape`` a list of at most ``MAX_NDIM`` non-negative integers, each at most ``MAX_DIMENSION``,
  whose non-zero ones multiply to at most ``MAX_ELEMENTS`` (C order: the last index varies
  fastest);
* ``encoding`` ``"packbits"`` for bool arrays: ``numpy.packbits`` of the flattened array (8 values
  per byte, the first value in the most significant bit, the last byte zero-padded), i.e.
  ``ceil(prod(shape) / 8)`` bytes; ``"raw"`` for the others: the C-order values, little-endian,
  ``prod(shape) * itemsize`` bytes (1 for uint8, 4 for float32).

Images and masks are ``(H, W)`` / ``(n, H, W)`` / ``(T, H, W, 3)`` arrays, row y (down) then
column x (right). ``decode`` checks everything (magic, lengths, the header with
``sam2s.strictjson.loads``, the dtype allow-list, encodings, shapes and their bounds, shapes
against payload sizes, padding bits, no trailing bytes) and raises ``ProtocolError`` (a
``ValueError``) with a message naming the problem: for any bytes, nothing else leaves it.

``PROTOCOL_VERSION`` is the version of the whole client / server protocol (these messages, the
endpoints and their fields); every request carries it in the ``X-SAM2S-Protocol`` header and the
server refuses another version (HTTP 426).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import strictjson

__all__ = [
    "DTYPES",
    "MAGIC",
    "MAX_DIMENSION",
    "MAX_ELEMENTS",
    "MAX_HEADER_BYTES",
    "MAX_NDIM",
    "PROTOCOL_HEADER",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "decode",
    "encode",
    "mask_from_bytes",
    "mask_to_bytes",
]

PROTOCOL_VERSION = 1
"""Version of the client / server protocol; bumped on any incompatible change."""

PROTOCOL_HEADER = "X-SAM2S-Protocol"
"""HTTP header that carries ``PROTOCOL_VERSION`` on every request."""

MAGIC = b"SAM2S"
"""First 5 bytes of every message."""

MAX_HEADER_BYTES = 4 * 2**20
"""Largest accepted JSON header (4 MiB; parsed, JSON takes several times its size in memory). The
largest a server sends, a job poll of 64 frames with 254 objects each, is under 1 MiB; a larger
length field means a corrupt or hostile message."""

MAX_NDIM = 8
"""Most dimensions of one array."""

MAX_DIMENSION = 2**31 - 1
"""Largest length of one dimension of an array."""

MAX_ELEMENTS = 2**40
"""Largest product of an array's non-zero dimensions (its values; for a zero-size array, what its
shape would hold without the zeros, so that no shape is absurd)."""

DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype(bool),
    "uint8": np.dtype("<u1"),
    "float32": np.dtype("<f4"),
}
"""The allowed array dtypes, by name (the wire dtype: little-endian)."""

_ENCODING = {"bool": "packbits", "uint8": "raw", "float32": "raw"}
_PREFIX = len(MAGIC) + 4


class ProtocolError(ValueError):
    """A message that is not a valid SAM2S protocol message (the text says what is wrong), or an
    array or header that ``encode`` cannot send."""


def _payload_size(dtype: str, count: int) -> int:
    """Bytes of the payload of ``count`` values of ``dtype`` (a name in ``DTYPES``)."""
    return (count + 7) // 8 if dtype == "bool" else count * DTYPES[dtype].itemsize


def encode(header: dict, arrays: Sequence[np.ndarray] = ()) -> bytes:
    """Build one message from a JSON-serialisable ``header`` and numpy arrays (format: module docstring).

    Args:
        header: a dict of JSON values (str keys; no NaN / Infinity); must not hold the key
            ``"arrays"`` (reserved for the array specs).
        arrays: numpy arrays of dtype bool, uint8 or float32, any shape with at most ``MAX_NDIM``
            dimensions, any memory layout (sent in C order, little-endian; bool bit-packed).

    Returns:
        The message bytes.

    Raises:
        ProtocolError: the header is not a dict, holds ``"arrays"`` or is not strict JSON; an
            array is not a numpy array, has another dtype or too many dimensions.
    """
    if not isinstance(header, dict):
        raise ProtocolError(f"the message header must be a dict, got {type(header).__name__}")
    if "arrays" in header:
        raise ProtocolError('the header key "arrays" is reserved for the array specs; rename that field')
    specs, payloads = [], []
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise ProtocolError(f"array {i} is a {type(a).__name__}, not a numpy array; pass np.asarray(...)")
        name = next((n for n, dt in DTYPES.items() if a.dtype == dt or a.dtype.newbyteorder("<") == dt), None)
        if name is None:
            raise ProtocolError(
                f"array {i} has dtype {a.dtype}; only {', '.join(DTYPES)} are sent: convert it, e.g. "
                "a.astype(np.float32) or a > 0 for a mask"
            )
        if a.ndim > MAX_NDIM:
            raise ProtocolError(f"array {i} has {a.ndim} dimensions; at most {MAX_NDIM} are sent")
        if name == "bool":
            data = np.packbits(a.reshape(-1)).tobytes()
        else:
            data = np.ascontiguousarray(a, dtype=DTYPES[name]).tobytes()
        specs.append({"dtype": name, "shape": [int(n) for n in a.shape], "encoding": _ENCODING[name]})
        payloads.append(data)
    try:
        text = json.dumps({**header, "arrays": specs}, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ProtocolError(
            f"the message header is not strict JSON ({error}); send str, int, float, list, dict"
        ) from None
    head = text.encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *payloads])


def _check_spec(i: int, spec: Any) -> tuple[str, tuple[int, ...], int]:
    """The dtype name, shape and value count of array spec ``i``; raises ``ProtocolError``."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "encoding"}:
        raise ProtocolError(
            f'array spec {i} must be an object with exactly the keys "dtype", "shape", "encoding"; got {spec!r:.200}'
        )
    dtype, shape, encoding = spec["dtype"], spec["shape"], spec["encoding"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(f"array {i} has dtype {dtype!r:.50}, which is not allowed; allowed: {', '.join(DTYPES)}")
    if encoding != _ENCODING[dtype]:
        raise ProtocolError(
            f"array {i} ({dtype}) has encoding {encoding!r:.50}; {dtype} arrays use {_ENCODING[dtype]!r}"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_DIMENSION for n in shape)
    ):
        raise ProtocolError(
            f"array {i} has shape {shape!r:.200}; a shape is a list of at most {MAX_NDIM} non-negative integers "
            f"of at most {MAX_DIMENSION}"
        )
    count = extent = 1
    for n in shape:
        count *= n
        extent *= max(n, 1)
    if extent > MAX_ELEMENTS:
        raise ProtocolError(
            f"array {i} has shape {shape}, whose non-zero dimensions hold {extent:.3g} values, more than the "
            f"{MAX_ELEMENTS:,} allowed (corrupt message)"
        )
    return dtype, tuple(shape), count


def _message_view(data: Any) -> memoryview:
    """``data`` as a flat byte view, at least the prefix long and starting with ``MAGIC``; raises
    ``ProtocolError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"a message is bytes, got {type(data).__name__}")
    try:
        view = memoryview(data).cast("B")
    except TypeError as error:  # e.g. a memoryview of a non-contiguous array
        raise ProtocolError(f"a message is a contiguous run of bytes ({error})") from None
    if len(view) < _PREFIX:
        raise ProtocolError(
            f"the message is {len(view)} bytes long, shorter than its {_PREFIX}-byte prefix (truncated)"
        )
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ProtocolError(
            f"the message does not start with {MAGIC!r} (found {bytes(view[:16])!r}): it is not a SAM2S message, "
            "e.g. a proxy's error page; check the server URL"
        )
    return view


def _read_header(view: memoryview) -> tuple[dict, list, int]:
    """``(header without "arrays", the array specs, offset of the first payload)`` of a message
    whose prefix ``_message_view`` checked; raises ``ProtocolError``."""
    (length,) = struct.unpack("<I", view[len(MAGIC) : _PREFIX])
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"the header length {length} exceeds the limit of {MAX_HEADER_BYTES} bytes (corrupt message)"
        )
    if _PREFIX + length > len(view):
        raise ProtocolError(
            f"the header length {length} runs past the end of the {len(view)}-byte message (truncated message)"
        )
    try:
        header = strictjson.loads(bytes(view[_PREFIX : _PREFIX + length]))
    except strictjson.StrictJSONError as error:
        raise ProtocolError(f"the message header is not strict JSON: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"the message header must be a JSON object, got {type(header).__name__}")
    specs = header.pop("arrays", None)
    if not isinstance(specs, list):
        raise ProtocolError('the message header lacks the "arrays" list of array specs')
    return header, specs, _PREFIX + length


def _read_array(view: memoryview, i: int, spec: Any, offset: int, copy: bool) -> tuple[np.ndarray, int]:
    """Array ``i`` of spec ``spec`` whose payload starts at byte ``offset`` of ``view``, and the
    payload's size in bytes; raises ``ProtocolError``."""
    dtype, shape, count = _check_spec(i, spec)
    size = _payload_size(dtype, count)
    if offset + size > len(view):
        raise ProtocolError(
            f"array {i} {dtype} {list(shape)} needs {size} payload bytes but only {len(view) - offset} remain "
            "(truncated message, or a shape that does not match the payload)"
        )
    chunk = view[offset : offset + size]
    if dtype == "bool":
        packed = np.frombuffer(chunk, dtype=np.uint8)
        if count % 8 and size and packed[-1] & ((1 << (8 - count % 8)) - 1):
            raise ProtocolError(f"array {i} (bool {list(shape)}) has non-zero padding bits (corrupt payload)")
        return np.unpackbits(packed, count=count).astype(bool).reshape(shape), size
    a = np.frombuffer(chunk, dtype=DTYPES[dtype]).reshape(shape)
    a = a.astype(a.dtype.newbyteorder("="), copy=copy) if copy or not a.dtype.isnative else a
    return a, size


def decode(data: bytes | bytearray | memoryview, copy: bool = False) -> tuple[dict, list[np.ndarray]]:
    """Read one message (format: module docstring), checking all of it.

    Args:
        data: the whole message.
        copy: return writable arrays that own their memory. By default uint8 and float32 arrays
            are read-only views of ``data`` (no copy); bool arrays are always new arrays.

    Returns:
        ``(header, arrays)``: the header without the ``"arrays"`` key, and the arrays in order
        (dtype bool, uint8 or float32 in native byte order, with the shapes of their specs).

    Raises:
        ProtocolError: not bytes; shorter than 9 bytes; wrong magic (not a SAM2S message, e.g. an
            HTML error page); a header length beyond the data or ``MAX_HEADER_BYTES``; a header
            that is not a UTF-8 strict JSON object within ``sam2s.strictjson``'s limits (integers
            of at most 19 digits, nesting at most 64 deep) or lacks a valid ``"arrays"`` list; a
            dtype outside the allow-list, a wrong encoding, a shape beyond ``MAX_NDIM``,
            ``MAX_DIMENSION`` or ``MAX_ELEMENTS``; payloads shorter or longer than the shapes
            need (truncated message or trailing bytes); non-zero padding bits of a bool array.
            Nothing else, for any bytes.
    """
    view = _message_view(data)
    header, specs, offset = _read_header(view)
    arrays = []
    for i, spec in enumerate(specs):
        a, size = _read_array(view, i, spec, offset, copy)
        arrays.append(a)
        offset += size
    if offset != len(view):
        raise ProtocolError(
            f"the message has {len(view) - offset} trailing bytes after its {len(specs)} array(s) "
            "(a shape that does not match the payload, or a corrupt message)"
        )
    return header, arrays


def mask_to_bytes(mask: np.ndarray) -> bytes:
    """A boolean mask as one message with an empty header (``encode({}, [mask != 0])``).

    Args:
        mask: any-shape array, non-zero = inside (e.g. ``(H, W)``, row y down, column x right).

    Returns:
        The message bytes (bit-packed).

    Raises:
        ProtocolError: not a numpy array, or more than ``MAX_NDIM`` dimensions.
    """
    if not isinstance(mask, np.ndarray):
        raise ProtocolError(f"a mask is a numpy array, got {type(mask).__name__}")
    return encode({}, [mask != 0])


def mask_from_bytes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """The bool mask of a message made by ``mask_to_bytes``.

    Raises:
        ProtocolError: an invalid message, or one that does not hold exactly one bool array.
    """
    _, arrays = decode(data)
    if len(arrays) != 1 or arrays[0].dtype != bool:
        raise ProtocolError(f"a mask message holds one bool array; got {[str(a.dtype) for a in arrays]}")
    return arrays[0]
