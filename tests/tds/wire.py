"""Small MS-TDS encoders and decoders for the fake server and raw test clients.

Deliberately independent of the production codec: byte layouts follow MS-TDS
(2.2.3.1 packet header, 2.2.6.4 LOGIN7, 2.2.6.5 PRELOGIN, 2.2.7.x tokens).
Integers are little-endian except the packet header, PRELOGIN offsets/VERSION
and the LOGINACK TDS version, which are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Packet types (2.2.3.1.1)
SQL_BATCH = 0x01
RPC = 0x03
TABULAR_RESULT = 0x04
ATTENTION = 0x06
BULK_LOAD = 0x07
TRANSACTION_MANAGER = 0x0E
LOGIN7 = 0x10
SSPI = 0x11
PRELOGIN = 0x12

# Packet status bits
STATUS_EOM = 0x01
STATUS_IGNORE = 0x02
STATUS_RESET_CONNECTION = 0x08
STATUS_RESET_CONNECTION_SKIP_TRAN = 0x10

HEADER = struct.Struct(">BBHHBB")
HEADER_SIZE = 8

# PRELOGIN options
PL_VERSION = 0x00
PL_ENCRYPTION = 0x01
PL_INSTOPT = 0x02
PL_THREADID = 0x03
PL_MARS = 0x04
PL_TRACEID = 0x05
PL_FEDAUTHREQUIRED = 0x06
PL_NONCEOPT = 0x07
PL_TERMINATOR = 0xFF

ENCRYPT_OFF = 0x00
ENCRYPT_ON = 0x01
ENCRYPT_NOT_SUP = 0x02
ENCRYPT_REQ = 0x03
ENCRYPT_CLIENT_CERT = 0x80

# Tokens (2.2.7)
TOKEN_RETURNSTATUS = 0x79
TOKEN_COLMETADATA = 0x81
TOKEN_ERROR = 0xAA
TOKEN_INFO = 0xAB
TOKEN_LOGINACK = 0xAD
TOKEN_FEATUREEXTACK = 0xAE
TOKEN_ROW = 0xD1
TOKEN_ENVCHANGE = 0xE3
TOKEN_SSPI = 0xED
TOKEN_DONE = 0xFD
TOKEN_DONEPROC = 0xFE
TOKEN_DONEINPROC = 0xFF

DONE_FINAL = 0x00
DONE_MORE = 0x01
DONE_ERROR = 0x02
DONE_INXACT = 0x04
DONE_COUNT = 0x10
DONE_ATTN = 0x20
DONE_SRVERROR = 0x100
CURCMD_SELECT = 0xC1

# ENVCHANGE types
ENV_DATABASE = 1
ENV_LANGUAGE = 2
ENV_PACKETSIZE = 4
ENV_COLLATION = 7
ENV_BEGIN_TRAN = 8
ENV_COMMIT_TRAN = 9
ENV_ROLLBACK_TRAN = 10
ENV_RESET_ACK = 18
ENV_ROUTING = 20

# Data types used in results
TYPE_INT4 = 0x38
TYPE_INTN = 0x26
TYPE_NVARCHAR = 0xE7
TYPE_NCHAR = 0xEF
TYPE_NTEXT = 0x63
TYPE_BIGVARCHAR = 0xA7
TYPE_BIGCHAR = 0xAF

# LOGIN7 flags
OPT2_INTEGRATED_SECURITY = 0x80
OPT3_CHANGE_PASSWORD = 0x01
OPT3_EXTENSION = 0x10

TDS_VERSIONS = {
    0x70000000: "7.0",
    0x71000000: "7.1",
    0x71000001: "7.1 rev1",
    0x72090002: "7.2",
    0x730A0003: "7.3A",
    0x730B0003: "7.3B",
    0x74000004: "7.4",
    0x08000000: "8.0",
}
TDS74 = 0x74000004

# Well-known RPC procedure ids (2.2.6.6)
PROC_IDS = {
    1: "sp_cursor",
    2: "sp_cursoropen",
    3: "sp_cursorprepare",
    4: "sp_cursorexecute",
    5: "sp_cursorprepexec",
    6: "sp_cursorunprepare",
    7: "sp_cursorfetch",
    8: "sp_cursoroption",
    9: "sp_cursorclose",
    10: "sp_executesql",
    11: "sp_prepare",
    12: "sp_execute",
    13: "sp_prepexec",
    14: "sp_prepexecrpc",
    15: "sp_unprepare",
}

# Latin1_General_CI_AS: LCID 0x0409, flags 0xD0 (ignore case/kana/width), version 0, sort id 52
DEFAULT_COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])


class ProtocolError(Exception):
    """The peer sent bytes that are not valid TDS."""


# ----------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class PacketHeader:
    type: int
    status: int
    length: int
    spid: int
    packet_id: int
    window: int

    @property
    def eom(self) -> bool:
        return bool(self.status & STATUS_EOM)


def parse_header(data: bytes) -> PacketHeader:
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"short packet header: {len(data)} bytes")
    header = PacketHeader(*HEADER.unpack(data))
    if header.length < HEADER_SIZE:
        raise ProtocolError(f"packet length {header.length} is smaller than its header")
    return header


def packet(
    ptype: int, payload: bytes, status: int = STATUS_EOM, spid: int = 0, packet_id: int = 1
) -> bytes:
    length = HEADER_SIZE + len(payload)
    if length > 0xFFFF:
        raise ValueError("packet too long")
    return HEADER.pack(ptype, status, length, spid, packet_id & 0xFF, 0) + payload


def split_message(
    ptype: int,
    payload: bytes,
    packet_size: int,
    spid: int = 0,
    first_id: int = 1,
    final: bool = True,
) -> list[bytes]:
    """Frame C{payload} as packets of at most C{packet_size} bytes; EOM on the last if C{final}."""
    room = packet_size - HEADER_SIZE
    if room <= 0:
        raise ValueError("packet size too small")
    chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
    packets = []
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        status = STATUS_EOM if (last and final) else 0
        packets.append(packet(ptype, chunk, status, spid, first_id + index))
    return packets


# ----------------------------------------------------------------------------- strings


def ucs2(text: str) -> bytes:
    return text.encode("utf-16-le")


def b_varchar(text: str) -> bytes:
    data = ucs2(text)
    if len(data) // 2 > 0xFF:
        raise ValueError("B_VARCHAR too long")
    return bytes([len(data) // 2]) + data


def us_varchar(text: str) -> bytes:
    data = ucs2(text)
    return struct.pack("<H", len(data) // 2) + data


def b_varbyte(data: bytes) -> bytes:
    return bytes([len(data)]) + data


# ----------------------------------------------------------------------------- PRELOGIN


def build_prelogin(options: list[tuple[int, bytes]]) -> bytes:
    """PRELOGIN payload from (token, data) pairs, in order."""
    table_size = 5 * len(options) + 1
    table = b""
    data = b""
    for token, value in options:
        table += struct.pack(">BHH", token, table_size + len(data), len(value))
        data += value
    return table + bytes([PL_TERMINATOR]) + data


def parse_prelogin(payload: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    position = 0
    while True:
        if position >= len(payload):
            raise ProtocolError("PRELOGIN option table is not terminated")
        token = payload[position]
        if token == PL_TERMINATOR:
            break
        if position + 5 > len(payload):
            raise ProtocolError("truncated PRELOGIN option table")
        _, offset, length = struct.unpack_from(">BHH", payload, position)
        if offset + length > len(payload):
            raise ProtocolError(f"PRELOGIN option 0x{token:02x} points outside the packet")
        options[token] = payload[offset : offset + length]
        position += 5
    return options


def server_version_option(
    major: int = 15, minor: int = 0, build: int = 2000, sub: int = 0
) -> bytes:
    return struct.pack(">BBHH", major, minor, build, sub)


# ----------------------------------------------------------------------------- LOGIN7

LOGIN7_FIXED = 94
_LOGIN7_HEAD = struct.Struct("<IIIIIIBBBBiI")  # 36 bytes


def _swap_nibbles(byte: int) -> int:
    return ((byte << 4) & 0xF0) | (byte >> 4)


def obfuscate_password(password: str) -> bytes:
    """LOGIN7 password encoding: UTF-16LE, nibbles swapped, XOR 0xA5."""
    return bytes(_swap_nibbles(b) ^ 0xA5 for b in ucs2(password))


def deobfuscate_password(data: bytes) -> str:
    return bytes(_swap_nibbles(b ^ 0xA5) for b in data).decode("utf-16-le", errors="replace")


@dataclass
class Login7:
    length: int
    tds_version: int
    packet_size: int
    client_prog_version: int
    client_pid: int
    connection_id: int
    option_flags1: int
    option_flags2: int
    type_flags: int
    option_flags3: int
    client_timezone: int
    client_lcid: int
    hostname: str = ""
    username: str = ""
    password: str = ""
    appname: str = ""
    servername: str = ""
    library: str = ""
    language: str = ""
    database: str = ""
    client_id: bytes = b""
    sspi: bytes = b""
    attach_db_file: str = ""
    change_password: str = ""
    features: dict[int, bytes] = field(default_factory=dict)

    @property
    def integrated_security(self) -> bool:
        return bool(self.option_flags2 & OPT2_INTEGRATED_SECURITY)

    @property
    def tds_version_name(self) -> str:
        return TDS_VERSIONS.get(self.tds_version, f"0x{self.tds_version:08x}")


def parse_login7(payload: bytes) -> Login7:
    if len(payload) < LOGIN7_FIXED:
        raise ProtocolError(f"LOGIN7 too short: {len(payload)} bytes")
    head = _LOGIN7_HEAD.unpack_from(payload, 0)
    login = Login7(*head)
    if login.length > len(payload):
        raise ProtocolError(
            f"LOGIN7 length field {login.length} exceeds the message ({len(payload)})"
        )

    def text(offset_at: int, obfuscated: bool = False) -> str:
        offset, count = struct.unpack_from("<HH", payload, offset_at)
        if count == 0:
            return ""
        end = offset + 2 * count
        if offset < LOGIN7_FIXED or end > len(payload):
            raise ProtocolError(f"LOGIN7 field at {offset_at} points outside the message")
        raw = payload[offset:end]
        if obfuscated:
            return deobfuscate_password(raw)
        return raw.decode("utf-16-le", errors="replace")

    login.hostname = text(36)
    login.username = text(40)
    login.password = text(44, obfuscated=True)
    login.appname = text(48)
    login.servername = text(52)
    login.library = text(60)
    login.language = text(64)
    login.database = text(68)
    login.client_id = payload[72:78]
    sspi_offset, sspi_length = struct.unpack_from("<HH", payload, 78)
    login.attach_db_file = text(82)
    login.change_password = text(86, obfuscated=True)
    if sspi_length == 0xFFFF and len(payload) >= 94:
        (sspi_length,) = struct.unpack_from("<I", payload, 90)
    if sspi_length:
        if sspi_offset < LOGIN7_FIXED or sspi_offset + sspi_length > len(payload):
            raise ProtocolError("LOGIN7 SSPI field points outside the message")
        login.sspi = payload[sspi_offset : sspi_offset + sspi_length]
    if login.option_flags3 & OPT3_EXTENSION:
        ext_offset, ext_length = struct.unpack_from("<HH", payload, 56)
        if ext_length >= 4 and ext_offset + 4 <= len(payload):
            (feature_offset,) = struct.unpack_from("<I", payload, ext_offset)
            login.features = _parse_features(payload, feature_offset)
    return login


def _parse_features(payload: bytes, offset: int) -> dict[int, bytes]:
    features: dict[int, bytes] = {}
    while offset < len(payload):
        feature_id = payload[offset]
        if feature_id == 0xFF:
            break
        if offset + 5 > len(payload):
            raise ProtocolError("truncated FeatureExt")
        (length,) = struct.unpack_from("<I", payload, offset + 1)
        start = offset + 5
        if start + length > len(payload):
            raise ProtocolError("FeatureExt entry points outside the message")
        features[feature_id] = payload[start : start + length]
        offset = start + length
    return features


def build_login7(
    username: str = "",
    password: str = "",
    database: str = "",
    hostname: str = "rawclient",
    appname: str = "raw-test",
    servername: str = "127.0.0.1",
    library: str = "raw-tds",
    language: str = "",
    sspi: bytes = b"",
    tds_version: int = TDS74,
    packet_size: int = 4096,
    option_flags2: int = 0x03,
) -> bytes:
    """A LOGIN7 payload (for raw test clients)."""
    if sspi:
        option_flags2 |= OPT2_INTEGRATED_SECURITY
    fields = [
        ("hostname", ucs2(hostname)),
        ("username", ucs2(username)),
        ("password", obfuscate_password(password)),
        ("appname", ucs2(appname)),
        ("servername", ucs2(servername)),
        ("extension", b""),
        ("library", ucs2(library)),
        ("language", ucs2(language)),
        ("database", ucs2(database)),
    ]
    position = LOGIN7_FIXED
    offsets = b""
    data = b""
    for _, value in fields:
        offsets += struct.pack("<HH", position if value else 0, len(value) // 2)
        data += value
        position += len(value)
    client_id = b"\x00" * 6
    sspi_part = struct.pack("<HH", position if sspi else 0, len(sspi))
    data += sspi
    position += len(sspi)
    tail = struct.pack("<HHHHI", 0, 0, 0, 0, 0)  # AtchDBFile, ChangePassword, cbSSPILong
    total = LOGIN7_FIXED + len(data)
    head = _LOGIN7_HEAD.pack(
        total, tds_version, packet_size, 0x07000000, 1234, 0, 0xE0, option_flags2, 0, 0, 0, 0x0409
    )
    result = head + offsets + client_id + sspi_part + tail + data
    assert len(head + offsets + client_id + sspi_part + tail) == LOGIN7_FIXED
    return result


# ----------------------------------------------------------------------------- tokens


def envchange(env_type: int, new: str, old: str) -> bytes:
    body = bytes([env_type]) + b_varchar(new) + b_varchar(old)
    return struct.pack("<BH", TOKEN_ENVCHANGE, len(body)) + body


def envchange_bytes(env_type: int, new: bytes, old: bytes) -> bytes:
    body = bytes([env_type]) + b_varbyte(new) + b_varbyte(old)
    return struct.pack("<BH", TOKEN_ENVCHANGE, len(body)) + body


def envchange_routing(host: str, port: int) -> bytes:
    value = struct.pack("<BH", 0, port) + us_varchar(host)
    body = bytes([ENV_ROUTING]) + struct.pack("<H", len(value)) + value + b"\x00\x00"
    return struct.pack("<BH", TOKEN_ENVCHANGE, len(body)) + body


def envchange_reset_ack() -> bytes:
    return struct.pack("<BHBBB", TOKEN_ENVCHANGE, 3, ENV_RESET_ACK, 0, 0)


def loginack(
    tds_version: int,
    prog_name: str = "Microsoft SQL Server",
    version: tuple[int, int, int] = (15, 0, 2000),
) -> bytes:
    name = ucs2(prog_name)
    major, minor, build = version
    body = (
        bytes([1])
        + struct.pack(">I", tds_version)
        + bytes([len(name) // 2])
        + name
        + struct.pack(">BBH", major, minor, build)
    )
    return struct.pack("<BH", TOKEN_LOGINACK, len(body)) + body


def message(
    number: int,
    text: str,
    state: int = 1,
    severity: int = 14,
    server: str = "FAKESQL",
    proc: str = "",
    line: int = 1,
    info: bool = False,
) -> bytes:
    body = (
        struct.pack("<iBB", number, state, severity)
        + us_varchar(text)
        + b_varchar(server)
        + b_varchar(proc)
        + struct.pack("<i", line)
    )
    return struct.pack("<BH", TOKEN_INFO if info else TOKEN_ERROR, len(body)) + body


def done(
    status: int = DONE_FINAL, curcmd: int = 0, rowcount: int = 0, token: int = TOKEN_DONE
) -> bytes:
    return struct.pack("<BHHQ", token, status, curcmd, rowcount)


def returnstatus(value: int = 0) -> bytes:
    return struct.pack("<Bi", TOKEN_RETURNSTATUS, value)


def sspi_token(blob: bytes) -> bytes:
    return struct.pack("<BH", TOKEN_SSPI, len(blob)) + blob


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "int" or "nvarchar"
    size: int = 0  # characters, for nvarchar


def colmetadata(columns: list[Column]) -> bytes:
    out = struct.pack("<BH", TOKEN_COLMETADATA, len(columns))
    for column in columns:
        if column.kind == "int":
            out += struct.pack("<IHB", 0, 0x0000, TYPE_INT4)
        elif column.kind == "nvarchar":
            out += (
                struct.pack("<IHBH", 0, 0x0001, TYPE_NVARCHAR, column.size * 2) + DEFAULT_COLLATION
            )
        else:
            raise ValueError(column.kind)
        out += b_varchar(column.name)
    return out


def row(columns: list[Column], values: tuple[object, ...]) -> bytes:
    out = bytes([TOKEN_ROW])
    for column, value in zip(columns, values, strict=True):
        if column.kind == "int":
            assert isinstance(value, int)
            out += struct.pack("<i", value)
        elif value is None:
            out += b"\xff\xff"
        else:
            data = ucs2(str(value))
            out += struct.pack("<H", len(data)) + data
    return out


# ----------------------------------------------------------------------------- requests


def strip_all_headers(payload: bytes) -> bytes:
    """Drop the ALL_HEADERS block (TDS 7.2+) if the payload starts with one."""
    if len(payload) >= 4:
        (total,) = struct.unpack_from("<I", payload, 0)
        if 4 <= total <= len(payload) and _headers_valid(payload, total):
            return payload[total:]
    return payload


def _headers_valid(payload: bytes, total: int) -> bool:
    position = 4
    while position < total:
        if position + 6 > total:
            return False
        length, kind = struct.unpack_from("<IH", payload, position)
        if length < 6 or kind not in (1, 2, 3):
            return False
        position += length
    return position == total


def batch_text(payload: bytes) -> str:
    return strip_all_headers(payload).decode("utf-16-le", errors="replace")


def batch_payload(text: str, transaction: int = 0) -> bytes:
    """SQL batch payload with the usual transaction-descriptor ALL_HEADERS."""
    header = struct.pack("<IHQI", 18, 2, transaction, 1)
    return struct.pack("<I", 4 + len(header)) + header + ucs2(text)


@dataclass
class RpcRequest:
    name: str
    statement: str | None


def parse_rpc(payload: bytes) -> RpcRequest:
    """Name and, when the first parameter is a string, its value (the statement of sp_executesql)."""
    body = strip_all_headers(payload)
    if len(body) < 2:
        raise ProtocolError("RPC request too short")
    (name_length,) = struct.unpack_from("<H", body, 0)
    position = 2
    if name_length == 0xFFFF:
        if len(body) < 4:
            raise ProtocolError("RPC request too short")
        (proc_id,) = struct.unpack_from("<H", body, 2)
        name = PROC_IDS.get(proc_id, f"proc#{proc_id}")
        position = 4
    else:
        end = position + 2 * name_length
        if end > len(body):
            raise ProtocolError("RPC name points outside the message")
        name = body[position:end].decode("utf-16-le", errors="replace")
        position = end
    position += 2  # OptionFlags
    try:
        statement = _first_string_parameter(body, position)
    except (struct.error, IndexError, ProtocolError):
        statement = None
    return RpcRequest(name, statement)


def _first_string_parameter(body: bytes, position: int) -> str | None:
    if position >= len(body):
        return None
    name_chars = body[position]
    position += 1 + 2 * name_chars + 1  # name, status flags
    type_id = body[position]
    position += 1
    if type_id in (TYPE_NVARCHAR, TYPE_NCHAR, TYPE_BIGVARCHAR, TYPE_BIGCHAR):
        (max_length,) = struct.unpack_from("<H", body, position)
        position += 2 + 5  # max length, collation
        wide = type_id in (TYPE_NVARCHAR, TYPE_NCHAR)
        if max_length == 0xFFFF:  # PLP
            (total,) = struct.unpack_from("<Q", body, position)
            position += 8
            if total == 0xFFFFFFFFFFFFFFFF:
                return None
            data = b""
            while True:
                (chunk,) = struct.unpack_from("<I", body, position)
                position += 4
                if chunk == 0:
                    break
                data += body[position : position + chunk]
                position += chunk
        else:
            (length,) = struct.unpack_from("<H", body, position)
            position += 2
            if length == 0xFFFF:
                return None
            data = body[position : position + length]
        return data.decode("utf-16-le" if wide else "latin-1", errors="replace")
    if type_id == TYPE_NTEXT:
        position += 4 + 5  # max length, collation
        (length,) = struct.unpack_from("<i", body, position)
        position += 4
        if length < 0:
            return None
        return body[position : position + length].decode("utf-16-le", errors="replace")
    return None


# ----------------------------------------------------------------------------- response parsing (raw clients)


@dataclass
class Response:
    """Decoded server response: the tokens the fake server emits, in order."""

    tokens: list[tuple[str, object]] = field(default_factory=list)
    rows: list[tuple[object, ...]] = field(default_factory=list)

    def of(self, kind: str) -> list[object]:
        return [value for name, value in self.tokens if name == kind]


def parse_response(payload: bytes) -> Response:
    response = Response()
    columns: list[tuple[int, int]] = []  # (type, length info)
    position = 0

    def take(size: int) -> bytes:
        nonlocal position
        if position + size > len(payload):
            raise ProtocolError("truncated token stream")
        chunk = payload[position : position + size]
        position += size
        return chunk

    def b_text() -> str:
        count = take(1)[0]
        return take(2 * count).decode("utf-16-le")

    def us_text() -> str:
        (count,) = struct.unpack("<H", take(2))
        return take(2 * count).decode("utf-16-le")

    while position < len(payload):
        token = take(1)[0]
        if token in (TOKEN_DONE, TOKEN_DONEPROC, TOKEN_DONEINPROC):
            status, curcmd, count = struct.unpack("<HHQ", take(12))
            kind = {TOKEN_DONE: "done", TOKEN_DONEPROC: "doneproc", TOKEN_DONEINPROC: "doneinproc"}[
                token
            ]
            response.tokens.append((kind, {"status": status, "curcmd": curcmd, "rowcount": count}))
        elif token in (TOKEN_ERROR, TOKEN_INFO):
            (length,) = struct.unpack("<H", take(2))
            end = position + length
            number, state, severity = struct.unpack("<iBB", take(6))
            text = us_text()
            server = b_text()
            proc = b_text()
            position = end
            response.tokens.append(
                (
                    "error" if token == TOKEN_ERROR else "info",
                    {
                        "number": number,
                        "state": state,
                        "class": severity,
                        "text": text,
                        "server": server,
                        "proc": proc,
                    },
                )
            )
        elif token == TOKEN_LOGINACK:
            (length,) = struct.unpack("<H", take(2))
            body = take(length)
            (version,) = struct.unpack_from(">I", body, 1)
            name_length = body[5]
            name = body[6 : 6 + 2 * name_length].decode("utf-16-le")
            response.tokens.append(
                (
                    "loginack",
                    {"tds_version": version, "prog_name": name, "prog_version": tuple(body[-4:])},
                )
            )
        elif token == TOKEN_ENVCHANGE:
            (length,) = struct.unpack("<H", take(2))
            body = take(length)
            env_type = body[0]
            value: dict[str, object] = {"type": env_type}
            if env_type == ENV_ROUTING:
                _, protocol, port, count = struct.unpack_from("<HBHH", body, 1)
                value.update(
                    protocol=protocol, port=port, server=body[8 : 8 + 2 * count].decode("utf-16-le")
                )
            elif env_type in (ENV_DATABASE, ENV_LANGUAGE, ENV_PACKETSIZE):
                count = body[1]
                value["new"] = body[2 : 2 + 2 * count].decode("utf-16-le")
            else:
                value["raw"] = body[1:]
            response.tokens.append(("envchange", value))
        elif token == TOKEN_SSPI:
            (length,) = struct.unpack("<H", take(2))
            response.tokens.append(("sspi", take(length)))
        elif token == TOKEN_RETURNSTATUS:
            response.tokens.append(("returnstatus", struct.unpack("<i", take(4))[0]))
        elif token == TOKEN_COLMETADATA:
            (count,) = struct.unpack("<H", take(2))
            columns = []
            names = []
            for _ in range(count):
                take(6)  # user type, flags
                type_id = take(1)[0]
                if type_id == TYPE_INT4:
                    columns.append((type_id, 4))
                elif type_id == TYPE_INTN:
                    columns.append((type_id, take(1)[0]))
                elif type_id in (TYPE_NVARCHAR, TYPE_NCHAR):
                    (size,) = struct.unpack("<H", take(2))
                    take(5)
                    columns.append((type_id, size))
                else:
                    raise ProtocolError(f"raw client cannot decode column type 0x{type_id:02x}")
                names.append(b_text())
            response.tokens.append(("colmetadata", names))
        elif token == TOKEN_ROW:
            values: list[object] = []
            for type_id, _ in columns:
                if type_id == TYPE_INT4:
                    values.append(struct.unpack("<i", take(4))[0])
                elif type_id == TYPE_INTN:
                    size = take(1)[0]
                    values.append(
                        int.from_bytes(take(size), "little", signed=True) if size else None
                    )
                else:
                    (size,) = struct.unpack("<H", take(2))
                    values.append(None if size == 0xFFFF else take(size).decode("utf-16-le"))
            response.rows.append(tuple(values))
        elif token == TOKEN_FEATUREEXTACK:
            while take(1)[0] != 0xFF:
                (length,) = struct.unpack("<I", take(4))
                take(length)
        else:
            raise ProtocolError(f"raw client cannot decode token 0x{token:02x} at {position - 1}")
    return response
