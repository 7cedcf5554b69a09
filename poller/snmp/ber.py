"""BER for SNMP v1/v2c messages: the primitives the replay agent and the v2c client share,
and the client's request encoder and response decoder.

gufo-snmp's GETBULK carries one OID, so a table of ten columns costs ten walks. The v2c
client (poller.snmp.wire) asks for every column of every table in one GETBULK instead, which
needs a codec of its own. The decoder is written for the shape of an answer: one pass over
the datagram, OIDs kept as their BER contents (a column's rows all start with the column's
contents, so filing a row is one bytes.startswith and a dict lookup for its index), values
converted to the Python types gufo-snmp gives (int, bytes, str), and every length checked
against the datagram so that hostile input costs one bounded pass and a MalformedError.
"""

from __future__ import annotations

Oid = tuple[int, ...]

MAX_OID_ARCS = 128  # RFC 2578 3.5
GET, GETNEXT, RESPONSE, SET, GETBULK = 0xA0, 0xA1, 0xA2, 0xA3, 0xA5
NO_SUCH_INSTANCE, END_OF_MIB_VIEW = b"\x81\x00", b"\x82\x00"
TOO_BIG, NO_SUCH_NAME, AUTHORIZATION_ERROR = 1, 2, 16
# Value tags of the exceptions RFC 3416 puts in a varbind instead of a value.
TAG_NO_SUCH_OBJECT, TAG_NO_SUCH_INSTANCE, TAG_END_OF_MIB_VIEW = 0x80, 0x81, 0x82


class MalformedError(ValueError):
    """A datagram that is not a well-formed SNMP v1/v2c message."""


# --- primitives ----------------------------------------------------------------------------


def ber_length(n: int) -> bytes:
    """Definite length octets, short form below 128, long form above."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, body: bytes) -> bytes:
    """One BER element with a single-octet tag."""
    return bytes((tag,)) + ber_length(len(body)) + body


def ber_integer(n: int, tag: int = 0x02) -> bytes:
    """An INTEGER (or application integer type) in minimal two's complement."""
    size = (n + (n < 0)).bit_length() // 8 + 1
    return tlv(tag, n.to_bytes(size, "big", signed=True))


def ber_oid(oid: Oid) -> bytes:
    """An OBJECT IDENTIFIER TLV."""
    return tlv(0x06, oid_contents(oid))


def oid_contents(oid: Oid) -> bytes:
    """An OBJECT IDENTIFIER's contents: base-128 sub-identifiers, the first two arcs packed."""
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40):
        raise ValueError(f"not an encodable OID: {oid}")
    return b"".join(map(encode_arc, (oid[0] * 40 + oid[1], *oid[2:])))


def encode_arc(arc: int) -> bytes:
    """One sub-identifier in base 128, high bit set on all but the last octet."""
    if 0 <= arc < 0x80:
        return bytes((arc,))
    if arc < 0:
        raise ValueError(f"negative sub-identifier {arc}")
    chunk = [arc & 0x7F]
    arc >>= 7
    while arc:
        chunk.append(0x80 | (arc & 0x7F))
        arc >>= 7
    return bytes(reversed(chunk))


def parse_oid(text: str) -> Oid:
    """ "1.3.6.1..." or ".1.3.6.1..." -> (1, 3, 6, 1, ...)."""
    return tuple(int(part) for part in text.strip().strip(".").split("."))


def read_head(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, body start, body end) of the element at pos; MalformedError if it overruns end."""
    if pos + 2 > end:
        raise MalformedError("truncated")
    tag, n = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise MalformedError("multi-octet tag")
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 3 or pos + k > end:  # 0: indefinite length, not allowed in SNMP
            raise MalformedError("bad length")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise MalformedError("length overruns")
    return tag, pos, pos + n


def read_integer(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of an INTEGER at pos."""
    tag, start, stop = read_head(data, pos, end)
    if tag != 0x02 or not 0 < stop - start <= 8:
        raise MalformedError("not an integer")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def read_varbind_names(data: bytes, pos: int, end: int) -> list[tuple[bytes, bytes]]:
    """(OID TLV, OID contents) of each varbind in a varbind list's contents."""
    names = []
    while pos < end:
        tag, vb_start, vb_end = read_head(data, pos, end)
        otag, ostart, ostop = read_head(data, vb_start, vb_end)
        if tag != 0x30 or otag != 0x06 or read_head(data, ostop, vb_end)[2] != vb_end:
            raise MalformedError("bad varbind")
        names.append((data[vb_start:ostop], data[ostart:ostop]))
        pos = vb_end
    return names


def decode_oid(body: bytes) -> Oid:
    """The arcs of an OBJECT IDENTIFIER's contents; bounded so hostile input stays cheap."""
    if not body or body[-1] & 0x80:
        raise MalformedError("bad OID")
    arcs: list[int] = []
    value = octets = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        octets += 1
        if not byte & 0x80:
            arcs.append(value)
            value = octets = 0
        elif octets >= 5:  # above 2**32, which no SNMP sub-identifier reaches
            raise MalformedError("OID arc too large")
    if len(arcs) >= MAX_OID_ARCS:
        raise MalformedError("OID too long")
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return head + tuple(arcs[1:])


# --- the v2c client's requests and answers ------------------------------------------------


def null_varbinds(names: list[bytes]) -> bytes:
    """A varbind list's contents: each OID (given as its BER contents) with a NULL value."""
    return b"".join(tlv(0x30, tlv(0x06, name) + b"\x05\x00") for name in names)


# INTEGERs 0-255 encoded (versions, error-status and -index, non-repeaters, repetitions).
_SMALL = tuple(ber_integer(n) for n in range(256))


def request(
    version: int, community: bytes, pdu_type: int, request_id: int, a: int, b: int, vbl: bytes
) -> bytes:
    """A request datagram; `a`, `b` are error-status and error-index (0, 0) or, for a
    GETBULK, non-repeaters and max-repetitions; `vbl` the varbind list's contents."""
    small = _SMALL
    fields = small[a] if 0 <= a < 256 else ber_integer(a)
    fields += small[b] if 0 <= b < 256 else ber_integer(b)
    pdu = ber_integer(request_id) + fields + tlv(0x30, vbl)
    head = small[version] if 0 <= version < 256 else ber_integer(version)
    return tlv(0x30, head + tlv(0x04, community) + tlv(pdu_type, pdu))


def oid_text(contents: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's contents, as gufo-snmp writes it."""
    return ".".join(map(str, decode_oid(contents)))


def index_text(suffix: bytes) -> str:
    """Dotted text of the arcs after a column's OID (a row index): no packed first pair."""
    if not suffix or suffix[-1] & 0x80:
        raise MalformedError("bad OID")
    if max(suffix) < 0x80:  # every arc below 128: one octet each (nearly every index)
        return ".".join(map(str, suffix))
    arcs: list[str] = []
    value = octets = 0
    for byte in suffix:
        value = (value << 7) | (byte & 0x7F)
        octets += 1
        if not byte & 0x80:
            arcs.append(str(value))
            value = octets = 0
        elif octets >= 5:
            raise MalformedError("OID arc too large")
    if len(arcs) >= MAX_OID_ARCS:
        raise MalformedError("OID too long")
    return ".".join(arcs)


def oid_less(a: bytes, b: bytes) -> bool:
    """Whether OID contents `a` sort before `b` (by arcs: octet order differs when arcs of
    different encoded lengths meet, e.g. 16383 and 16384)."""
    return decode_oid(a) < decode_oid(b)


# (OID contents, value tag, value); the value is None for NULL and the exceptions.
Varbind = tuple[bytes, int, "str | bytes | int | float | None"]

_UNSIGNED = frozenset({0x41, 0x42, 0x43, 0x46, 0x47})  # Counter32 Gauge32 TimeTicks C64 UInt32
_BYTES = frozenset({0x04, 0x44})  # OCTET STRING, Opaque


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """(length, position after the length octets) at pos (just after a tag)."""
    n = data[pos]
    if n < 0x80:
        return n, pos + 1
    k = n & 0x7F
    if k == 0 or k > 3:  # indefinite, or longer than any datagram
        raise MalformedError("bad length")
    return int.from_bytes(data[pos + 1 : pos + 1 + k], "big"), pos + 1 + k


def _value(tag: int, body: bytes) -> str | bytes | int | float | None:
    """A varbind value as gufo-snmp returns it; None for NULL, exceptions, unknown types."""
    if tag == 0x02:
        if len(body) > 9:
            raise MalformedError("INTEGER too long")
        return int.from_bytes(body, "big", signed=True)
    if tag in _BYTES:
        return body
    if tag in _UNSIGNED:
        if len(body) > 9:
            raise MalformedError("integer too long")
        return int.from_bytes(body, "big")
    if tag == 0x06:
        return oid_text(body)
    if tag == 0x40:
        return ".".join(map(str, body))
    if tag == 0x01:
        return bool(body and body[0])
    return None


def parse_response(data: bytes, version: int) -> tuple[int, int, int, list[Varbind]] | None:
    """(request-id, error-status, error-index, varbinds) of a Response-PDU; None when the
    datagram is another version's message or another PDU (a request or trap sent to our
    port). MalformedError when it is not a well-formed SNMP message at all."""
    try:
        return _parse(data, version)
    except IndexError:
        raise MalformedError("truncated message") from None


def _parse(data: bytes, version: int) -> tuple[int, int, int, list[Varbind]] | None:
    end = len(data)
    if data[0] != 0x30:
        raise MalformedError("not a SEQUENCE")
    n, pos = _length(data, 1)
    if pos + n != end:
        raise MalformedError("message length does not match the datagram")
    tag, start, stop = read_head(data, pos, end)
    if tag != 0x02 or not 0 < stop - start <= 4:
        raise MalformedError("bad version")
    if int.from_bytes(data[start:stop], "big", signed=True) != version:
        return None
    tag, start, pos = read_head(data, stop, end)  # community: not checked (we sent it)
    if tag != 0x04:
        raise MalformedError("bad community")
    tag, pos, pdu_end = read_head(data, pos, end)
    if tag != RESPONSE:
        return None  # a request or trap sent to our port: not an answer
    rid, pos = read_integer(data, pos, pdu_end)
    status, pos = read_integer(data, pos, pdu_end)
    index, pos = read_integer(data, pos, pdu_end)
    tag, pos, vbl_end = read_head(data, pos, pdu_end)
    if tag != 0x30:
        raise MalformedError("bad varbind list")
    return rid, status, index, _varbinds(data, pos, vbl_end)


def _varbinds(data: bytes, pos: int, vbl_end: int) -> list[Varbind]:
    """The varbinds of a varbind list's contents, data[pos:vbl_end]."""
    out: list[Varbind] = []
    append = out.append
    # The loop below is most of a poll's decoding: short lengths (nearly all) and the
    # common value types are read inline; every index is checked against the datagram
    # (a slice past the end is short, which the length checks catch; an index past it
    # raises IndexError, mapped to MalformedError by the caller).
    while pos < vbl_end:
        if data[pos] != 0x30:
            raise MalformedError("bad varbind")
        n = data[pos + 1]
        if n < 0x80:
            pos += 2
        else:
            n, pos = _length(data, pos + 1)
        vb_end = pos + n
        if vb_end > vbl_end or data[pos] != 0x06:
            raise MalformedError("bad varbind")
        n = data[pos + 1]
        if n < 0x80:
            pos += 2
        else:
            n, pos = _length(data, pos + 1)
        name_end = pos + n
        name = data[pos:name_end]
        if not n or name_end > vb_end or name[-1] & 0x80:
            raise MalformedError("bad OID")
        if n >= MAX_OID_ARCS and (n > 640 or n - sum(b >> 7 for b in name) + 1 > MAX_OID_ARCS):
            raise MalformedError("OID too long")  # more sub-identifiers than RFC 2578 allows
        tag = data[name_end]
        n = data[name_end + 1]
        if n < 0x80:
            pos = name_end + 2
        else:
            n, pos = _length(data, name_end + 1)
        if pos + n != vb_end:
            raise MalformedError("bad varbind value")
        if tag == 0x02 and 0 < n <= 9:
            append((name, tag, int.from_bytes(data[pos:vb_end], "big", signed=True)))
        elif tag == 0x04:
            append((name, tag, data[pos:vb_end]))
        elif tag in _UNSIGNED and n <= 9:  # Gauge32, Counter32, TimeTicks, ...
            append((name, tag, int.from_bytes(data[pos:vb_end], "big")))
        else:
            append((name, tag, _value(tag, data[pos:vb_end])))
        pos = vb_end
    if pos != vbl_end:
        raise MalformedError("varbind list overruns")
    return out
