"""LOGIN7: decoding, password de-obfuscation and the credential rewrite.

A LOGIN7 message (packet type 0x10, MS-TDS 2.2.6.4) is a 94-byte fixed part
(TDS 7.2 and later; little-endian integers) followed by a variable part that
the fixed part addresses with C{ib}/C{cch} pairs: offsets from the start of
the LOGIN7 data and lengths in UTF-16 code units (bytes for SSPI and the
extension).  When OptionFlags3 has fExtension, the pair at offset 56 points
at a DWORD holding the offset of the FeatureExt block (feature id, DWORD
length, data, ... 0xFF).

L{decode_login7} checks every pair against the Length field and decodes
the strings; L{encode_login7} lays the variable part out again in one
canonical order and recomputes every offset, the FeatureExt pointer and the
length, so that rewriting the credentials (L{Login7.with_credentials},
L{Login7.with_sspi}) keeps every other field of the client's login.

Passwords are only obfuscated (nibble swap and XOR 0xA5), never encrypted:
a LOGIN7 must cross networks inside TLS only.  The C{repr} of a L{Login7}
leaves out the password, the new password, the SSPI blob and FeatureExt.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shared.codecs.tds.packets import TdsError

# TDS versions as LOGIN7 stores them (read little-endian).
TDS70 = 0x70000000
TDS71 = 0x71000000
TDS71_REV1 = 0x71000001
TDS72 = 0x72090002
TDS73A = 0x730A0003
TDS73B = 0x730B0003
TDS74 = 0x74000004
TDS80 = 0x08000000

# OptionFlags1
OPT1_BYTE_ORDER = 0x01
OPT1_CHAR = 0x02
OPT1_FLOAT = 0x0C
OPT1_DUMP_LOAD = 0x10
OPT1_USE_DB = 0x20
OPT1_DATABASE = 0x40
OPT1_SET_LANG = 0x80
# OptionFlags2
OPT2_LANGUAGE = 0x01
OPT2_ODBC = 0x02
OPT2_USER_TYPE = 0x70
OPT2_INT_SECURITY = 0x80
# TypeFlags
TYPE_SQL = 0x0F
TYPE_OLEDB = 0x10
TYPE_READ_ONLY_INTENT = 0x20
# OptionFlags3
OPT3_CHANGE_PASSWORD = 0x01
OPT3_BINARY_XML = 0x02
OPT3_USER_INSTANCE = 0x04
OPT3_UNKNOWN_COLLATION = 0x08
OPT3_EXTENSION = 0x10

# FeatureExt feature ids
FEATURE_SESSION_RECOVERY = 0x01
FEATURE_FEDAUTH = 0x02
FEATURE_COLUMN_ENCRYPTION = 0x04
FEATURE_GLOBAL_TRANSACTIONS = 0x05
FEATURE_AZURE_SQL_SUPPORT = 0x08
FEATURE_DATA_CLASSIFICATION = 0x09
FEATURE_UTF8_SUPPORT = 0x0A
FEATURE_AZURE_SQL_DNS_CACHING = 0x0B
FEATURE_TERMINATOR = 0xFF

MAX_LOGIN7_LENGTH = 128 * 1024
"""Default cap of L{decode_login7} (the specification allows up to 128 KiB - 1)."""

# Length, TDSVersion, PacketSize, ClientProgVer, ClientPID, ConnectionID,
# OptionFlags1, OptionFlags2, TypeFlags, OptionFlags3, ClientTimeZone, ClientLCID,
# nine ib/cch pairs (HostName .. Database), ClientID, three pairs (SSPI,
# AtchDBFile, ChangePassword), cbSSPILong.
_FIXED = struct.Struct("<6I4BiI18H6s6HI")
FIXED_SIZE = _FIXED.size  # 94
_FIXED_SIZE_71 = 86
_DWORD = struct.Struct("<I")
_USHORT_MAX = 0xFFFF


def obfuscate_password(text: str) -> bytes:
    """The LOGIN7 form of a password: UTF-16LE, each byte nibble-swapped and XORed with 0xA5.

    Raises C{ValueError} for text that has no UTF-16 form (lone surrogates).
    """
    try:
        raw = text.encode("utf-16-le")
    except UnicodeEncodeError:
        raise ValueError("the password is not encodable as UTF-16") from None
    return bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in raw)


def deobfuscate_password(data: bytes) -> str:
    """The inverse of L{obfuscate_password}; raises L{TdsError} for an impossible value."""
    if len(data) % 2:
        raise TdsError("obfuscated password has an odd number of bytes")
    raw = bytes((((b ^ 0xA5) << 4) & 0xF0) | ((b ^ 0xA5) >> 4) for b in data)
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError:
        raise TdsError("password is not valid UTF-16") from None


def feature_ext_length(data: bytes, start: int = 0, end: int | None = None) -> int:
    """The size of the FeatureExt block at C{data[start:]}, terminator included.

    The block must end with 0xFF before C{end}; raises L{TdsError} otherwise.
    """
    limit = len(data) if end is None else end
    position = start
    while True:
        if position >= limit:
            raise TdsError("FeatureExt has no terminator")
        feature = data[position]
        position += 1
        if feature == FEATURE_TERMINATOR:
            return position - start
        if position + _DWORD.size > limit:
            raise TdsError(f"FeatureExt entry 0x{feature:02x} is truncated")
        (size,) = _DWORD.unpack_from(data, position)
        position += _DWORD.size
        if size > limit - position:
            raise TdsError(f"FeatureExt entry 0x{feature:02x} extends beyond the LOGIN7 data")
        position += size


def decode_feature_ext(block: bytes) -> tuple[tuple[int, bytes], ...]:
    """The C{(feature id, data)} entries of a FeatureExt block; raises L{TdsError}."""
    if feature_ext_length(block) != len(block):
        raise TdsError("bytes after the FeatureExt terminator")
    entries: list[tuple[int, bytes]] = []
    position = 0
    while block[position] != FEATURE_TERMINATOR:
        (size,) = _DWORD.unpack_from(block, position + 1)
        start = position + 1 + _DWORD.size
        entries.append((block[position], block[start : start + size]))
        position = start + size
    return tuple(entries)


def encode_feature_ext(entries: Sequence[tuple[int, bytes]]) -> bytes:
    """A FeatureExt block (terminator included) from C{(feature id, data)} entries."""
    out: list[bytes] = []
    for feature, data in entries:
        if not 0 <= feature < FEATURE_TERMINATOR:
            raise ValueError(f"invalid FeatureExt feature id {feature}")
        out.append(bytes([feature]) + _DWORD.pack(len(data)) + data)
    out.append(bytes([FEATURE_TERMINATOR]))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Login7:
    """A decoded LOGIN7 message.  Every field has a default, so tests and builders can be brief.

    @ivar tds_version: the TDSVersion DWORD as read little-endian (L{TDS74} = 0x74000004).
    @ivar password: the plain password (de-obfuscated).
    @ivar unused_extension: the bytes at ibExtension when fExtension is not set
        (normally empty).
    @ivar feature_ext: the FeatureExt block, terminator included, when fExtension is
        set.  Constructing a L{Login7} sets or clears fExtension in
        C{option_flags3} to match it (and refuses C{unused_extension} bytes
        next to it).
    @ivar client_id: six bytes (the client's MAC address).
    """

    tds_version: int = TDS74
    packet_size: int = 4096
    client_prog_ver: int = 0
    client_pid: int = 0
    connection_id: int = 0
    option_flags1: int = OPT1_USE_DB | OPT1_DATABASE | OPT1_SET_LANG
    option_flags2: int = OPT2_LANGUAGE | OPT2_ODBC
    type_flags: int = 0
    option_flags3: int = 0
    client_timezone: int = 0
    client_lcid: int = 0x0409
    hostname: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    appname: str = ""
    servername: str = ""
    unused_extension: bytes = b""
    feature_ext: bytes | None = field(default=None, repr=False)
    clt_int_name: str = ""
    language: str = ""
    database: str = ""
    client_id: bytes = bytes(6)
    sspi: bytes = field(default=b"", repr=False)
    attach_db_file: str = ""
    change_password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        # fExtension says whether FeatureExt is present: keep the two in step.
        flags = self.option_flags3 & ~OPT3_EXTENSION
        if self.feature_ext is not None:
            if self.unused_extension:
                raise ValueError("a LOGIN7 has either FeatureExt or unused extension bytes")
            flags |= OPT3_EXTENSION
        if flags != self.option_flags3:
            object.__setattr__(self, "option_flags3", flags)

    @property
    def features(self) -> tuple[tuple[int, bytes], ...]:
        """The FeatureExt entries (empty without FeatureExt)."""
        return () if self.feature_ext is None else decode_feature_ext(self.feature_ext)

    def without_credentials(self) -> Login7:
        """The login minus everything secret or that acts on the account.

        Empties UserName, Password, ChangePassword, AtchDBFile and SSPI, clears
        fChangePassword, fUserInstance and fIntSecurity, and drops the FEDAUTH
        feature (it can carry an access token) from FeatureExt.
        """
        feature_ext = self.feature_ext
        if feature_ext is not None:
            kept = [entry for entry in self.features if entry[0] != FEATURE_FEDAUTH]
            feature_ext = encode_feature_ext(kept)
        return replace(
            self,
            username="",
            password="",
            change_password="",
            attach_db_file="",
            sspi=b"",
            option_flags2=self.option_flags2 & ~OPT2_INT_SECURITY,
            option_flags3=self.option_flags3 & ~(OPT3_CHANGE_PASSWORD | OPT3_USER_INSTANCE),
            feature_ext=feature_ext,
        )

    def with_credentials(self, username: str, password: str, servername: str) -> Login7:
        """The login for SQL authentication as C{username} on C{servername}.

        Applies L{without_credentials} first (so a client's password change,
        attach file or SSPI blob never rides along), then sets UserName,
        Password and ServerName; fIntSecurity stays cleared.
        """
        return replace(
            self.without_credentials(),
            username=username,
            password=password,
            servername=servername,
        )

    def with_sspi(self, token: bytes, servername: str) -> Login7:
        """The login for Windows authentication with the first SSPI C{token} on C{servername}.

        Applies L{without_credentials} first, then sets SSPI, ServerName and fIntSecurity
        (UserName and Password stay empty).
        """
        stripped = self.without_credentials()
        return replace(
            stripped,
            sspi=token,
            servername=servername,
            option_flags2=stripped.option_flags2 | OPT2_INT_SECURITY,
        )


def _region(name: str, offset: int, size: int, length: int) -> tuple[int, int]:
    """The checked C{(start, end)} of a variable field; empty fields may point anywhere."""
    if size == 0:
        return 0, 0
    if offset < FIXED_SIZE:
        raise TdsError(f"LOGIN7 {name} points into the fixed part (offset {offset})")
    if offset + size > length:
        raise TdsError(f"LOGIN7 {name} extends beyond the end of the message")
    return offset, offset + size


def _text(payload: bytes, name: str, offset: int, chars: int, length: int) -> str:
    start, end = _region(name, offset, 2 * chars, length)
    try:
        return payload[start:end].decode("utf-16-le")
    except UnicodeDecodeError:
        raise TdsError(f"LOGIN7 {name} is not valid UTF-16") from None


def decode_login7(payload: bytes, max_length: int = MAX_LOGIN7_LENGTH) -> Login7:
    """Decode and check a LOGIN7 message payload; raises L{TdsError} with the reason.

    The Length field must equal the payload's size (at most C{max_length}),
    each non-empty field must lie after the fixed part and inside the
    message, strings must be valid UTF-16LE, fExtension needs a 4-byte
    extension holding the offset of a FeatureExt block terminated inside the
    message, and cbSSPI 0xFFFF defers to cbSSPILong (when non-zero).  A TDS
    7.0/7.1 LOGIN7 (86-byte fixed part) is refused.
    """
    if len(payload) > max_length:
        raise TdsError(f"LOGIN7 of {len(payload)} bytes exceeds the limit of {max_length}")
    if len(payload) < FIXED_SIZE:
        raise TdsError(f"LOGIN7 of {len(payload)} bytes is shorter than its fixed part")
    (
        length,
        tds_version,
        packet_size,
        client_prog_ver,
        client_pid,
        connection_id,
        option_flags1,
        option_flags2,
        type_flags,
        option_flags3,
        client_timezone,
        client_lcid,
        ib_hostname,
        cch_hostname,
        ib_username,
        cch_username,
        ib_password,
        cch_password,
        ib_appname,
        cch_appname,
        ib_servername,
        cch_servername,
        ib_extension,
        cb_extension,
        ib_clt_int_name,
        cch_clt_int_name,
        ib_language,
        cch_language,
        ib_database,
        cch_database,
        client_id,
        ib_sspi,
        cb_sspi,
        ib_attach_db_file,
        cch_attach_db_file,
        ib_change_password,
        cch_change_password,
        cb_sspi_long,
    ) = _FIXED.unpack_from(payload)
    if length != len(payload):
        raise TdsError(f"LOGIN7 Length field is {length} but the message has {len(payload)} bytes")
    if TDS70 <= tds_version < TDS72 and ib_hostname == _FIXED_SIZE_71:
        raise TdsError("TDS 7.0/7.1 LOGIN7 (86-byte fixed part) is not supported")

    def text(name: str, offset: int, chars: int) -> str:
        return _text(payload, name, offset, chars, length)

    def password(name: str, offset: int, chars: int) -> str:
        start, end = _region(name, offset, 2 * chars, length)
        return deobfuscate_password(payload[start:end])

    feature_ext: bytes | None = None
    unused_extension = b""
    if option_flags3 & OPT3_EXTENSION:
        if cb_extension != _DWORD.size:
            raise TdsError(f"LOGIN7 fExtension is set but cbExtension is {cb_extension}, not 4")
        start, _ = _region("Extension", ib_extension, _DWORD.size, length)
        (feature_offset,) = _DWORD.unpack_from(payload, start)
        if not FIXED_SIZE <= feature_offset < length:
            raise TdsError(f"LOGIN7 FeatureExt offset {feature_offset} is outside the message")
        size = feature_ext_length(payload, feature_offset, length)
        feature_ext = payload[feature_offset : feature_offset + size]
    else:
        start, end = _region("Extension", ib_extension, cb_extension, length)
        unused_extension = payload[start:end]

    sspi_size = cb_sspi
    if cb_sspi == _USHORT_MAX and cb_sspi_long:
        sspi_size = cb_sspi_long
    start, end = _region("SSPI", ib_sspi, sspi_size, length)
    sspi = payload[start:end]

    return Login7(
        tds_version=tds_version,
        packet_size=packet_size,
        client_prog_ver=client_prog_ver,
        client_pid=client_pid,
        connection_id=connection_id,
        option_flags1=option_flags1,
        option_flags2=option_flags2,
        type_flags=type_flags,
        option_flags3=option_flags3,
        client_timezone=client_timezone,
        client_lcid=client_lcid,
        hostname=text("HostName", ib_hostname, cch_hostname),
        username=text("UserName", ib_username, cch_username),
        password=password("Password", ib_password, cch_password),
        appname=text("AppName", ib_appname, cch_appname),
        servername=text("ServerName", ib_servername, cch_servername),
        unused_extension=unused_extension,
        feature_ext=feature_ext,
        clt_int_name=text("CltIntName", ib_clt_int_name, cch_clt_int_name),
        language=text("Language", ib_language, cch_language),
        database=text("Database", ib_database, cch_database),
        client_id=client_id,
        sspi=sspi,
        attach_db_file=text("AtchDBFile", ib_attach_db_file, cch_attach_db_file),
        change_password=password("ChangePassword", ib_change_password, cch_change_password),
    )


def _utf16(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-16-le")
    except UnicodeEncodeError:
        raise ValueError(f"LOGIN7 {name} is not encodable as UTF-16") from None


class _Layout:
    """The variable part under construction: appends fields, returns their ib values."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def cursor(self) -> int:
        return FIXED_SIZE + len(self.data)

    def put(self, name: str, raw: bytes, count: int) -> tuple[int, int]:
        """Append C{raw}; return C{(ib, count)} for the fixed part."""
        offset = self.cursor
        if count > _USHORT_MAX:
            raise ValueError(f"LOGIN7 {name} is too long ({count} units)")
        if offset > _USHORT_MAX:
            if raw:
                raise ValueError(f"LOGIN7 {name} would start beyond offset 65535")
            offset = 0
        self.data += raw
        return offset, count

    def text(self, name: str, value: str) -> tuple[int, int]:
        raw = _utf16(name, value)
        return self.put(name, raw, len(raw) // 2)

    def password(self, name: str, value: str) -> tuple[int, int]:
        raw = obfuscate_password(value)
        return self.put(name, raw, len(raw) // 2)


def encode_login7(login: Login7) -> bytes:
    """The LOGIN7 payload of C{login}, variable part in canonical order.

    HostName, UserName, Password, AppName, ServerName, Extension (the
    FeatureExt pointer, or C{unused_extension}), CltIntName, Language,
    Database, SSPI, AtchDBFile, ChangePassword, FeatureExt.  Empty fields
    point at the current end of the data.  fExtension is set exactly when
    C{feature_ext} is not C{None}.  Raises C{ValueError} for values that do
    not fit (a malformed FeatureExt block, a ClientID not of 6 bytes, a
    string over 65535 units, a field beyond offset 65535).
    """
    feature_ext = login.feature_ext
    option_flags3 = login.option_flags3 & ~OPT3_EXTENSION
    if feature_ext is not None:
        option_flags3 |= OPT3_EXTENSION
        try:
            decode_feature_ext(feature_ext)
        except TdsError as error:
            raise ValueError(f"LOGIN7 FeatureExt is malformed: {error.reason}") from None
    if len(login.client_id) != 6:
        raise ValueError(f"LOGIN7 ClientID must be 6 bytes, not {len(login.client_id)}")
    layout = _Layout()
    hostname = layout.text("HostName", login.hostname)
    username = layout.text("UserName", login.username)
    password = layout.password("Password", login.password)
    appname = layout.text("AppName", login.appname)
    servername = layout.text("ServerName", login.servername)
    if feature_ext is not None:
        extension = layout.put("Extension", bytes(_DWORD.size), _DWORD.size)
    else:
        extension = layout.put("Extension", login.unused_extension, len(login.unused_extension))
    clt_int_name = layout.text("CltIntName", login.clt_int_name)
    language = layout.text("Language", login.language)
    database = layout.text("Database", login.database)
    sspi_size = len(login.sspi)
    sspi_short = sspi_size if sspi_size < _USHORT_MAX else _USHORT_MAX
    sspi_long = 0 if sspi_size < _USHORT_MAX else sspi_size
    sspi = layout.put("SSPI", login.sspi, 0)[0], sspi_short
    attach_db_file = layout.text("AtchDBFile", login.attach_db_file)
    change_password = layout.password("ChangePassword", login.change_password)
    if feature_ext is not None:
        _DWORD.pack_into(layout.data, extension[0] - FIXED_SIZE, layout.cursor)
        layout.data += feature_ext
    length = layout.cursor
    try:
        fixed = _FIXED.pack(
            length,
            login.tds_version,
            login.packet_size,
            login.client_prog_ver,
            login.client_pid,
            login.connection_id,
            login.option_flags1,
            login.option_flags2,
            login.type_flags,
            option_flags3,
            login.client_timezone,
            login.client_lcid,
            *hostname,
            *username,
            *password,
            *appname,
            *servername,
            *extension,
            *clt_int_name,
            *language,
            *database,
            login.client_id,
            *sspi,
            *attach_db_file,
            *change_password,
            sspi_long,
        )
    except struct.error as error:
        raise ValueError(f"LOGIN7 field out of range: {error}") from None
    return fixed + bytes(layout.data)
