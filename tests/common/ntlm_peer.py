"""pysqlbridge with Windows logins (NTLM) checked on Linux, for tests/mssql.rs.

pysqlbridge runs SQL Server's side of a Windows login itself (LOGIN7's SSPI
blob, the SSPI token back, the client's SSPI message, then the login answer),
but hands each token to Windows' SSPI through pywin32, which Linux does not
have. This launcher gives it, in place of SSPI, an NTLM acceptor written from
MS-NLMP: it sends a CHALLENGE and checks the client's NTLMv2 response
(NTProofStr) against the NT hash of the account's password, as a domain
controller does. Everything else, the TDS framing and packet types included,
is pysqlbridge's own.

Usage: python ntlm_peer.py <DOMAIN,dns.name> <user> <password> -- <pysqlbridge args...>
The one account it admits is user in DOMAIN (by either of the domain's names,
as a domain controller does: a client given user@dns.name sends the DNS name)
with that password. What each login
attempt came to is appended, one line each, to ntlm.log in the working
directory: "ok DOMAIN\\user", "refused DOMAIN\\user", or "bad <reason>".

Not checked (no one can without the session key's use): the MIC, and signing
or sealing, which a TDS login does not use.

With NTLM_PEER_CHALLENGE set, the challenge is sent malformed, as a broken or
hostile server might: "truncated" (cut inside its header), "bad-offset" (the
target info said to lie past the end), "bad-av-pair" (an AV pair longer than
what follows) or "bad-signature" (not NTLMSSP).
"""

from __future__ import annotations

import hmac
import os
import struct
import sys
import time

SIGNATURE = b"NTLMSSP\x00"
SEC_I_CONTINUE_NEEDED = 0x00090312
SEC_E_OK = 0

# NegotiateFlags a Windows server offers (MS-NLMP 2.2.2.5): UNICODE,
# REQUEST_TARGET, NTLM, ALWAYS_SIGN, TARGET_TYPE_DOMAIN,
# EXTENDED_SESSIONSECURITY, TARGET_INFO, VERSION, 128, KEY_EXCH, 56.
FLAGS = (0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00010000
         | 0x00080000 | 0x00800000 | 0x02000000 | 0x20000000 | 0x40000000
         | 0x80000000)


def md4(data: bytes) -> bytes:
    """RFC 1320. OpenSSL 3 no longer offers MD4 to hashlib."""
    def f(x, y, z): return (x & y) | (~x & z)
    def g(x, y, z): return (x & y) | (x & z) | (y & z)
    def h(x, y, z): return x ^ y ^ z
    def rotl(v, s): v &= 0xFFFFFFFF; return ((v << s) | (v >> (32 - s))) & 0xFFFFFFFF

    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64)
    msg += struct.pack("<Q", (len(data) * 8) & 0xFFFFFFFFFFFFFFFF)
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for at in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[at:at + 64])
        a, b, c, d = state
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            a, b, c, d = d, rotl(a + f(b, c, d) + x[k], s), b, c
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a, b, c, d = d, rotl(a + g(b, c, d) + x[k] + 0x5A827999, s), b, c
        for i in range(16):
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            a, b, c, d = d, rotl(a + h(b, c, d) + x[k] + 0x6ED9EBA1, s), b, c
        state = [(v + w) & 0xFFFFFFFF for v, w in zip(state, (a, b, c, d))]
    return struct.pack("<4I", *state)


# RFC 1320's own test vectors, so that a mistake here cannot pass for a client's.
assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
assert md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
assert md4(b"12345678901234567890123456789012345678901234567890123456789012345678901234567890").hex() == "e33b4ddc9c38f2199c3e7b164fcc0536"


def hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "md5").digest()


def utf16(s: str) -> bytes:
    return s.encode("utf-16-le")


def field(msg: bytes, at: int) -> bytes:
    """A (length, max length, offset) field's bytes."""
    length, _, offset = struct.unpack_from("<HHI", msg, at)
    if offset + length > len(msg):
        raise ValueError(f"a field at {at} runs past the message")
    return msg[offset:offset + length]


def av_pairs(pairs: list[tuple[int, bytes]]) -> bytes:
    out = b"".join(struct.pack("<HH", k, len(v)) + v for k, v in pairs)
    return out + struct.pack("<HH", 0, 0)  # MsvAvEOL


def note(line: str) -> None:
    with open("ntlm.log", "a", encoding="utf-8") as log:
        log.write(line + "\n")


class Buffer:
    def __init__(self, data: bytes) -> None:
        self.Buffer = data


class NtlmServerAuth:
    """What pysqlbridge.auth expects of pywin32's sspi.ServerAuth."""

    def __init__(self, domains: str, user: str, password: str) -> None:
        self.domains = {d.upper() for d in domains.split(",")}
        self.user = user.upper()
        self.nt_hash = md4(utf16(password))
        self.server_challenge = os.urandom(8)
        self.name = None
        self.ctxt = self

    def QueryContextAttributes(self, _attribute):  # noqa: N802 - pywin32's name
        return self.name

    def authorize(self, token: bytes):
        if token[:8] != SIGNATURE:
            note("bad not an NTLM message (SPNEGO is not spoken here)")
            raise ValueError("not an NTLM message")
        (kind,) = struct.unpack_from("<I", token, 8)
        if kind == 1:
            return SEC_I_CONTINUE_NEEDED, [Buffer(malformed(self.challenge()))]
        if kind == 3:
            return self.authenticate(token), []
        note(f"bad NTLM message type {kind}")
        raise ValueError(f"unexpected NTLM message type {kind}")

    def challenge(self) -> bytes:
        target = utf16("STANDIN")
        timestamp = (int(time.time()) + 11644473600) * 10_000_000
        info = av_pairs([
            (2, utf16("STANDIN")),               # MsvAvNbDomainName
            (1, utf16("SQL1")),                  # MsvAvNbComputerName
            (4, utf16("standin.test")),          # MsvAvDnsDomainName
            (3, utf16("sql1.standin.test")),     # MsvAvDnsComputerName
            (7, struct.pack("<Q", timestamp)),   # MsvAvTimestamp
        ])
        head = 56
        return (SIGNATURE + struct.pack("<I", 2)
                + struct.pack("<HHI", len(target), len(target), head)
                + struct.pack("<I", FLAGS) + self.server_challenge + b"\x00" * 8
                + struct.pack("<HHI", len(info), len(info), head + len(target))
                + bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f"
                + target + info)

    def authenticate(self, msg: bytes) -> int:
        nt_response = field(msg, 20)
        domain = field(msg, 28).decode("utf-16-le")
        user = field(msg, 36).decode("utf-16-le")
        who = f"{domain}\\{user}"
        if len(nt_response) <= 24:
            note(f"bad {who}: not an NTLMv2 response ({len(nt_response)} bytes)")
            raise ValueError("NTLMv1 is not accepted")
        proof, blob = nt_response[:16], nt_response[16:]
        # NTLMv2_CLIENT_CHALLENGE: RespType and HiRespType 1, six zero bytes, the time, the
        # client's challenge, four zero bytes, then the AV pairs.
        if blob[:8] != b"\x01\x01" + b"\x00" * 6:
            note(f"bad {who}: not an NTLMv2 client challenge")
            raise ValueError("not an NTLMv2 client challenge")
        # NTOWFv2: the user name upper-cased, the domain as sent.
        key = hmac_md5(self.nt_hash, utf16(user.upper() + domain))
        expected = hmac_md5(key, self.server_challenge + blob)
        known = domain.upper() in self.domains and user.upper() == self.user
        if known and hmac.compare_digest(proof, expected):
            self.name = who
            note(f"ok {who}")
            return SEC_E_OK
        note(f"refused {who}")
        raise ValueError(f"wrong password or unknown account {who}")


def accept_authenticate_in_a_login7_packet() -> None:
    """Take the client's answer to the challenge in a LOGIN7 packet (0x10) too.

    MS-TDS says an SSPI message (0x11), and pysqlbridge insists on it, but SQL
    Server accepts either, and tiberius sends its NTLM answer in a LOGIN7
    packet on Linux (tiberius-rs/tiberius pull request 351, "Fix header type
    for SSPI response message": "MSSQL seems to accept either of these header
    types"). So does this launcher, as SQL Server does, and notes it.
    """
    from pysqlbridge.tds import connection
    from pysqlbridge.tds.packet import PacketType

    take = connection.Connection._take_message

    def take_message(self):
        message = take(self)
        if (message is not None
                and self._state is connection.ConnectionState.EXPECT_SSPI
                and message.type is PacketType.LOGIN7):
            note("answer in a LOGIN7 packet")
            message = message._replace(type=PacketType.SSPI)
        return message

    connection.Connection._take_message = take_message


def answer_a_refusal_as_sql_server_does() -> None:
    """Answer a refused Windows login with error 18452, as SQL Server does.

    pysqlbridge closes the connection when SSPI refuses the client's answer;
    SQL Server sends "Login failed. The login is from an untrusted domain and
    cannot be used with Integrated authentication." (18452) first, which is
    what a client shows its user. Built with pysqlbridge's own error token,
    as it answers a refused SQL login.
    """
    from pysqlbridge.auth import AuthenticationError
    from pysqlbridge.tds import connection

    step = connection.Connection._step_sspi

    def step_sspi(self, responses):
        try:
            return step(self, responses)
        except AuthenticationError:
            self._send(responses, connection.error_response(
                18452,
                "Login failed. The login is from an untrusted domain and "
                "cannot be used with Integrated authentication.",
                server=self._server_name,
                severity=connection.LOGIN_FAILED_SEVERITY,
                tds_version=self._tds_version,
            ))
            self._state = connection.ConnectionState.FAILED
            return True

    connection.Connection._step_sspi = step_sspi


def malformed(challenge: bytes) -> bytes:
    """The challenge as NTLM_PEER_CHALLENGE says (unchanged when it is not set)."""
    how = os.environ.get("NTLM_PEER_CHALLENGE", "")
    if how == "truncated":
        return challenge[:30]
    if how == "bad-offset":
        return challenge[:40] + struct.pack("<HHI", 200, 200, 60000) + challenge[48:]
    if how == "bad-av-pair":
        # The target name (14 bytes) ends at 70; then a timestamp pair claiming 65535 bytes.
        return challenge[:70] + struct.pack("<HH", 7, 0xFFFF)
    if how == "bad-signature":
        return b"XXXX" + challenge[4:]
    return challenge


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 4 or args[3] != "--":
        sys.exit(__doc__)
    domain, user, password = args[:3]
    import pysqlbridge.auth
    from pysqlbridge.server import main as serve
    pysqlbridge.auth._new_server_auth = lambda: NtlmServerAuth(domain, user, password)
    accept_authenticate_in_a_login7_packet()
    answer_a_refusal_as_sql_server_does()
    sys.argv = ["pysqlbridge", *args[4:]]
    serve()


if __name__ == "__main__":
    main()
