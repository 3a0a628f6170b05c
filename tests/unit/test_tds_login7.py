"""LOGIN7 (shared/codecs/tds/login7.py): the spec sample, obfuscation, rewriting, malformed input."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs.tds import login7 as l7
from shared.codecs.tds.login7 import (
    FIXED_SIZE,
    Login7,
    decode_login7,
    deobfuscate_password,
    encode_feature_ext,
    encode_login7,
    obfuscate_password,
)
from shared.codecs.tds.packets import (
    DEFAULT_PACKET_SIZE,
    MessageAssembler,
    PacketParser,
    PacketType,
    TdsError,
    encode_message,
)


def utf16(text: str) -> str:
    return text.encode("utf-16-le").hex()


# MS-TDS 4.2 "Login7 request", rebuilt field by field from the specification page.
SPEC_HEADER = bytes.fromhex("10 01 00 90 00 00 01 00")
SPEC_LOGIN7 = bytes.fromhex(
    "88 00 00 00"  # Length 0x88
    "02 00 09 72"  # TDSVersion 7.2
    "00 10 00 00"  # PacketSize 4096
    "00 00 00 07"  # ClientProgVer
    "00 01 00 00"  # ClientPID 0x100
    "00 00 00 00"  # ConnectionID
    "E0 03 00 00"  # OptionFlags1, OptionFlags2, TypeFlags, OptionFlags3
    "00 00 00 00"  # ClientTimeZone
    "09 04 00 00"  # ClientLCID 0x409
    "5E 00 08 00"  # HostName @94, 8 chars
    "6E 00 02 00"  # UserName @110, 2 chars
    "72 00 00 00"  # Password @114, empty
    "72 00 07 00"  # AppName @114, 7 chars
    "80 00 00 00"  # ServerName @128, empty
    "80 00 00 00"  # Extension (unused) @128, empty
    "80 00 04 00"  # CltIntName @128, 4 chars
    "88 00 00 00"  # Language, empty
    "88 00 00 00"  # Database, empty
    "00 50 8B E2 B7 8F"  # ClientID
    "88 00 00 00"  # SSPI, empty
    "88 00 00 00"  # AtchDBFile, empty
    "88 00 00 00"  # ChangePassword, empty
    "00 00 00 00" + utf16("skostov1") + utf16("sa") + utf16("OSQL-32") + utf16("ODBC")  # cbSSPILong
)


def test_spec_sample_decodes() -> None:
    (packet,) = PacketParser().feed(SPEC_HEADER + SPEC_LOGIN7)
    assert packet.type == PacketType.LOGIN7 and len(packet.payload) == 0x88
    login = decode_login7(packet.payload)
    assert login.tds_version == l7.TDS72 == 0x72090002
    assert login.packet_size == 4096
    assert login.client_prog_ver == 0x07000000
    assert login.client_pid == 0x100
    assert login.option_flags1 == 0xE0
    assert login.option_flags2 == 0x03
    assert (login.type_flags, login.option_flags3) == (0, 0)
    assert login.client_lcid == 0x409
    assert login.hostname == "skostov1"
    assert login.username == "sa"
    assert login.password == ""
    assert login.appname == "OSQL-32"
    assert login.servername == ""
    assert login.clt_int_name == "ODBC"
    assert login.language == login.database == login.attach_db_file == ""
    assert login.client_id == bytes.fromhex("00 50 8B E2 B7 8F")
    assert login.sspi == b"" and login.unused_extension == b"" and login.feature_ext is None


def test_spec_sample_reencodes_byte_identically() -> None:
    login = decode_login7(SPEC_LOGIN7)
    assert encode_login7(login) == SPEC_LOGIN7
    assert encode_message(PacketType.LOGIN7, encode_login7(login)) == SPEC_HEADER + SPEC_LOGIN7


def test_password_obfuscation_vectors() -> None:
    # Swap nibbles, XOR 0xA5: "s" = 0x73 -> 0x37 ^ 0xA5 = 0x92, "a" = 0x61 -> 0x16 ^ 0xA5 = 0xB3.
    assert obfuscate_password("sa") == bytes.fromhex("92 A5 B3 A5")
    assert deobfuscate_password(bytes.fromhex("92 A5 B3 A5")) == "sa"
    assert obfuscate_password("as") == bytes.fromhex("B3 A5 92 A5")
    assert obfuscate_password("\u00e9\u20ac") == bytes.fromhex("3B A5 6F A7")  # E9 00 AC 20
    assert obfuscate_password("") == b""
    with pytest.raises(TdsError):
        deobfuscate_password(b"\xb3")


@given(st.text(max_size=200))
def test_password_obfuscation_round_trips(text: str) -> None:
    hidden = obfuscate_password(text)
    assert len(hidden) == len(text.encode("utf-16-le"))
    assert deobfuscate_password(hidden) == text


# -- strategies --------------------------------------------------------------

u8 = st.integers(min_value=0, max_value=0xFF)
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
short_text = st.text(max_size=40)
features = st.lists(
    st.tuples(st.integers(min_value=0, max_value=0xFE), st.binary(max_size=20)), max_size=4
)


@st.composite
def logins(draw: st.DrawFn) -> Login7:
    feature_list = draw(st.none() | features)
    feature_ext = None if feature_list is None else encode_feature_ext(feature_list)
    option_flags3 = draw(u8)  # the constructor makes fExtension match feature_ext
    return Login7(
        tds_version=draw(st.sampled_from([l7.TDS72, l7.TDS73B, l7.TDS74, l7.TDS80]) | u32),
        packet_size=draw(u32),
        client_prog_ver=draw(u32),
        client_pid=draw(u32),
        connection_id=draw(u32),
        option_flags1=draw(u8),
        option_flags2=draw(u8),
        type_flags=draw(u8),
        option_flags3=option_flags3,
        client_timezone=draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        client_lcid=draw(u32),
        hostname=draw(short_text),
        username=draw(short_text),
        password=draw(short_text),
        appname=draw(short_text),
        servername=draw(short_text),
        unused_extension=b"" if feature_ext is not None else draw(st.binary(max_size=8)),
        feature_ext=feature_ext,
        clt_int_name=draw(short_text),
        language=draw(short_text),
        database=draw(short_text),
        client_id=draw(st.binary(min_size=6, max_size=6)),
        sspi=draw(st.binary(max_size=64)),
        attach_db_file=draw(short_text),
        change_password=draw(short_text),
    )


STRING_FIELDS = [
    # (field, offset of its ib/cch pair, obfuscated)
    ("hostname", 36, False),
    ("username", 40, False),
    ("password", 44, True),
    ("appname", 48, False),
    ("servername", 52, False),
    ("clt_int_name", 60, False),
    ("language", 64, False),
    ("database", 68, False),
    ("attach_db_file", 82, False),
    ("change_password", 86, True),
]


def check_layout(login: Login7, data: bytes) -> None:
    """Every offset/length pair of the encoded bytes frames exactly its field."""
    (length,) = struct.unpack_from("<I", data)
    assert length == len(data)
    for name, position, hidden in STRING_FIELDS:
        offset, chars = struct.unpack_from("<HH", data, position)
        value: str = getattr(login, name)
        expected = obfuscate_password(value) if hidden else value.encode("utf-16-le")
        assert chars == len(expected) // 2, name
        assert data[offset : offset + 2 * chars] == expected, name
        if chars:
            assert offset >= FIXED_SIZE
    offset, size = struct.unpack_from("<HH", data, 78)
    assert size == len(login.sspi) and data[offset : offset + size] == login.sspi
    offset, size = struct.unpack_from("<HH", data, 56)
    if login.feature_ext is None:
        assert data[offset : offset + size] == login.unused_extension
        assert not data[27] & l7.OPT3_EXTENSION
    else:
        assert size == 4 and data[27] & l7.OPT3_EXTENSION
        (pointer,) = struct.unpack_from("<I", data, offset)
        assert data[pointer:] == login.feature_ext


@given(logins())
def test_decode_encode_round_trip(login: Login7) -> None:
    data = encode_login7(login)
    check_layout(login, data)
    assert decode_login7(data) == login


@given(logins(), short_text, short_text, short_text)
def test_with_credentials_changes_only_the_credentials(
    login: Login7, username: str, password: str, servername: str
) -> None:
    stripped = login.without_credentials()
    injected = stripped.with_credentials(username, password, servername)
    assert (injected.username, injected.password, injected.servername) == (
        username,
        password,
        servername,
    )
    assert not injected.option_flags2 & l7.OPT2_INT_SECURITY
    assert injected.option_flags2 | l7.OPT2_INT_SECURITY == stripped.option_flags2 | 0x80
    for field in dataclasses.fields(Login7):
        if field.name not in ("username", "password", "servername", "option_flags2"):
            assert getattr(injected, field.name) == getattr(stripped, field.name), field.name
    # Applied to the client's login directly, it strips the secrets on the way.
    assert login.with_credentials(username, password, servername) == injected
    data = encode_login7(injected)
    check_layout(injected, data)
    assert decode_login7(data) == injected


@given(logins())
def test_without_credentials_strips_every_secret(login: Login7) -> None:
    stripped = login.without_credentials()
    assert stripped.username == stripped.password == stripped.change_password == ""
    assert stripped.attach_db_file == "" and stripped.sspi == b""
    assert not stripped.option_flags2 & l7.OPT2_INT_SECURITY
    assert not stripped.option_flags3 & (l7.OPT3_CHANGE_PASSWORD | l7.OPT3_USER_INSTANCE)
    assert all(feature != l7.FEATURE_FEDAUTH for feature, _ in stripped.features)
    kept = [entry for entry in login.features if entry[0] != l7.FEATURE_FEDAUTH]
    assert list(stripped.features) == kept
    for name in ("hostname", "appname", "servername", "database", "language", "packet_size"):
        assert getattr(stripped, name) == getattr(login, name)
    assert decode_login7(encode_login7(stripped)) == stripped


def test_with_sspi_sets_integrated_security() -> None:
    login = decode_login7(SPEC_LOGIN7)
    token = b"NTLMSSP\0\x01\x00\x00\x00" + bytes(20)
    windows = login.with_sspi(token, "db.example")
    assert windows.option_flags2 & l7.OPT2_INT_SECURITY
    assert windows.username == windows.password == ""
    assert windows.servername == "db.example"
    assert decode_login7(encode_login7(windows)).sspi == token


def test_feature_ext_pointer_and_flag() -> None:
    utf8 = bytes.fromhex("0A 01 00 00 00 01 FF")  # UTF8_SUPPORT = 1, as FreeTDS and tedious send
    login = Login7(hostname="h", username="u", password="p", feature_ext=utf8)
    data = encode_login7(login)
    assert data[27] & l7.OPT3_EXTENSION
    decoded = decode_login7(data)
    assert decoded.feature_ext == utf8
    assert decoded.features == ((l7.FEATURE_UTF8_SUPPORT, b"\x01"),)
    assert decoded.option_flags3 & l7.OPT3_EXTENSION
    # Without FeatureExt the flag is cleared again.
    plain = dataclasses.replace(decoded, feature_ext=None)
    assert not plain.option_flags3 & l7.OPT3_EXTENSION
    assert not encode_login7(plain)[27] & l7.OPT3_EXTENSION
    assert Login7(feature_ext=b"\xff").option_flags3 == l7.OPT3_EXTENSION
    with pytest.raises(ValueError):
        Login7(feature_ext=b"\xff", unused_extension=b"x")


def test_fedauth_feature_is_dropped_with_the_credentials() -> None:
    block = encode_feature_ext([(l7.FEATURE_FEDAUTH, b"token"), (l7.FEATURE_UTF8_SUPPORT, b"\1")])
    login = Login7(feature_ext=block)
    assert login.without_credentials().features == ((l7.FEATURE_UTF8_SUPPORT, b"\1"),)


def test_long_sspi_uses_cb_sspi_long() -> None:
    token = bytes(range(256)) * 300  # 76800 bytes
    login = Login7(hostname="host").with_sspi(token, "server")
    data = encode_login7(login)
    (short,) = struct.unpack_from("<H", data, 80)
    (long,) = struct.unpack_from("<I", data, 90)
    assert (short, long) == (0xFFFF, len(token))
    assert decode_login7(data) == login


def test_big_login7_is_split_and_reassembled() -> None:
    login = Login7(
        hostname="h" * 128,
        username="u",
        password="secret",
        appname="a" * 128,
        database="d",
        sspi=b"",
        feature_ext=encode_feature_ext([(l7.FEATURE_SESSION_RECOVERY, bytes(5000))]),
    )
    payload = encode_login7(login)
    assert len(payload) > DEFAULT_PACKET_SIZE
    wire = encode_message(PacketType.LOGIN7, payload)
    parser = PacketParser()
    assembler = MessageAssembler(128 * 1024)
    packets = parser.feed(wire)
    assert len(packets) == 2 and all(len(p.payload) + 8 <= 4096 for p in packets)
    messages = [m for m in (assembler.add(p) for p in packets) if m is not None]
    assert len(messages) == 1
    assert decode_login7(messages[0].payload) == login


def test_repr_hides_secrets() -> None:
    login = Login7(username="alice", password="hunter2", change_password="hunter3", sspi=b"blob")
    text = repr(login)
    assert "alice" in text
    assert "hunter2" not in text and "hunter3" not in text and "blob" not in text


def patched(data: bytes, offset: int, layout: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(layout, out, offset, *values)
    return bytes(out)


def extension_login() -> bytes:
    return encode_login7(Login7(hostname="host", feature_ext=bytes.fromhex("0A 01 00 00 00 01 FF")))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: SPEC_LOGIN7[:60], "shorter than its fixed part"),
        (lambda: SPEC_LOGIN7 + b"\0\0", "Length field is 136"),
        (lambda: patched(SPEC_LOGIN7, 0, "<I", 0x86)[:-2], "CltIntName extends beyond"),
        (lambda: patched(SPEC_LOGIN7, 36, "<HH", 0x80, 8), "HostName extends beyond"),
        (lambda: patched(SPEC_LOGIN7, 36, "<HH", 0x5E, 0x4000), "HostName extends beyond"),
        (lambda: patched(SPEC_LOGIN7, 40, "<HH", 10, 2), "UserName points into the fixed part"),
        (lambda: patched(SPEC_LOGIN7, 78, "<HH", 0x80, 9), "SSPI extends beyond"),
        (lambda: patched(SPEC_LOGIN7, 78, "<HH", 0x80, 0xFFFF), "SSPI extends beyond"),
        (lambda: patched(SPEC_LOGIN7, 27, "<B", l7.OPT3_EXTENSION), "cbExtension is 0"),
        (lambda: patched(extension_login(), 56, "<HH", 0x10, 4), "Extension points into"),
        (lambda: bytes(SPEC_LOGIN7[:-1]) + b"\xd8", "not valid UTF-16"),
    ],
)
def test_malformed_login7_is_refused(make: object, reason: str) -> None:
    assert callable(make)
    with pytest.raises(TdsError) as caught:
        decode_login7(make())
    assert reason in caught.value.reason


def test_odd_byte_length_of_an_obfuscated_field_is_impossible_but_odd_text_is_refused() -> None:
    # cch counts UTF-16 units, so a lone high surrogate is the closest thing to an odd length.
    data = patched(SPEC_LOGIN7, 40, "<HH", 0x6E, 1)  # UserName "s"
    assert decode_login7(data).username == "s"
    broken = bytearray(SPEC_LOGIN7)
    broken[0x6E:0x70] = b"\x00\xdc"  # lone low surrogate in UserName
    with pytest.raises(TdsError, match="UserName is not valid UTF-16"):
        decode_login7(bytes(broken))


def test_tds71_login7_is_refused_with_a_clear_reason() -> None:
    data = patched(SPEC_LOGIN7, 4, "<I", l7.TDS71)
    data = patched(data, 36, "<HH", 86, 4)
    with pytest.raises(TdsError, match="TDS 7.0/7.1 LOGIN7"):
        decode_login7(data)


def test_bad_feature_ext_is_refused() -> None:
    data = extension_login()
    offset, _ = struct.unpack_from("<HH", data, 56)
    (pointer,) = struct.unpack_from("<I", data, offset)
    with pytest.raises(TdsError, match="outside the message"):
        decode_login7(patched(data, offset, "<I", len(data)))
    with pytest.raises(TdsError, match="outside the message"):
        decode_login7(patched(data, offset, "<I", 10))
    with pytest.raises(TdsError, match="beyond the LOGIN7 data"):
        decode_login7(patched(data, pointer + 1, "<I", 100))
    with pytest.raises(TdsError, match="no terminator"):
        decode_login7(data[:-1].replace(data[:4], struct.pack("<I", len(data) - 1), 1))
    with pytest.raises(ValueError, match="FeatureExt is malformed"):
        encode_login7(Login7(feature_ext=b"\x0a\x01"))


def test_length_limit() -> None:
    login = Login7(sspi=bytes(70000))
    data = encode_login7(login)
    with pytest.raises(TdsError, match="exceeds the limit"):
        decode_login7(data, max_length=64 * 1024)
    assert decode_login7(data).sspi == bytes(70000)


def test_unencodable_values_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="ClientID"):
        encode_login7(Login7(client_id=b"\0"))
    with pytest.raises(ValueError, match="out of range"):
        encode_login7(Login7(option_flags1=256))
    with pytest.raises(ValueError):
        encode_login7(Login7(hostname="\ud800"))


@given(
    logins(),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_login7_decodes_or_raises_tds_error(
    login: Login7, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(encode_login7(login))
    for position, value in mutations:
        data[position % len(data)] = value
    try:
        decoded = decode_login7(bytes(data))
    except TdsError:
        return
    # Whatever decodes re-encodes to something that decodes to the same value.
    assert decode_login7(encode_login7(decoded)) == decoded


@given(logins(), st.integers(min_value=0, max_value=400))
def test_truncated_login7_raises_tds_error(login: Login7, cut: int) -> None:
    data = encode_login7(login)
    with pytest.raises(TdsError):
        decode_login7(data[: cut % len(data)])
