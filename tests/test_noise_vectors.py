"""spchat.noise against the public cacophony test vectors, plus failure cases.

The vectors are not part of the repository.  They are read from
``../shared/vectors/noise-cacophony-25519.json`` next to the checkout, or
from the file named by ``SPCHAT_NOISE_VECTORS``.  Without them the vector
test is one skip, or one failure when ``SPCHAT_CI`` is set.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from spchat import noise
from spchat.noise import NoiseError

DEFAULT_VECTORS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "noise-cacophony-25519.json"
)
VECTORS_PATH = Path(os.environ.get("SPCHAT_NOISE_VECTORS") or DEFAULT_VECTORS)

# Dropping support for any of these must fail the suite, not turn into skips.
REQUIRED = [
    f"Noise_{pattern}_25519_{cipher}_{hash_name}"
    for pattern, cipher, hash_name in itertools.product(
        ["NN", "NK", "NX", "XX", "IK"],
        ["AESGCM", "ChaChaPoly"],
        ["SHA256", "SHA512", "BLAKE2s", "BLAKE2b"],
    )
]
for _name in REQUIRED:
    noise.parse_protocol_name(_name)  # raises NoiseError if unsupported
assert noise.CHAT_PROTOCOL in REQUIRED


def _unsupported(protocol_name: str) -> str | None:
    try:
        noise.parse_protocol_name(protocol_name)
    except NoiseError as e:
        return str(e)
    return None


def _vector_params():
    if not VECTORS_PATH.is_file():
        where = f"no Noise test vectors at {VECTORS_PATH}"
        if os.environ.get("SPCHAT_CI"):
            return [pytest.param({"missing": where}, id="vectors-missing")]
        reason = f"{where}; set SPCHAT_NOISE_VECTORS=/path/to/noise-cacophony-25519.json"
        return [pytest.param(None, id="vectors-missing", marks=pytest.mark.skip(reason=reason))]
    with VECTORS_PATH.open(encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    params = []
    for vector in vectors:
        name = vector["protocol_name"]
        problem = _unsupported(name)
        marks = [pytest.mark.skip(reason=f"unsupported: {problem}")] if problem else []
        params.append(pytest.param(vector, id=name, marks=marks))
    return params


def _hex(vector: dict, key: str) -> bytes | None:
    value = vector.get(key)
    return None if value is None else bytes.fromhex(value)


def _side(vector: dict, prefix: str, initiator: bool) -> noise.HandshakeState:
    return noise.HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=_hex(vector, f"{prefix}_prologue") or b"",
        s=_hex(vector, f"{prefix}_static"),
        e=_hex(vector, f"{prefix}_ephemeral"),
        rs=_hex(vector, f"{prefix}_remote_static"),
        re=_hex(vector, f"{prefix}_remote_ephemeral"),
        psks=[bytes.fromhex(p) for p in vector.get(f"{prefix}_psks", [])],
    )


@pytest.mark.parametrize("vector", _vector_params())
def test_vector(vector):
    if "missing" in vector:
        pytest.fail(f"{vector['missing']} (SPCHAT_CI is set, so this is an error)")
    init = _side(vector, "init", initiator=True)
    resp = _side(vector, "resp", initiator=False)
    one_way = noise.parse_protocol_name(vector["protocol_name"]).one_way
    ciphers = None
    for i, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        initiator_sends = one_way or i % 2 == 0
        if ciphers is None:
            writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
            assert writer.write_message(payload) == expected, f"message {i}"
            assert reader.read_message(expected) == payload, f"message {i}"
            if init.complete or resp.complete:
                assert init.complete and resp.complete
                hh = bytes.fromhex(vector["handshake_hash"])
                assert init.handshake_hash == hh
                assert resp.handshake_hash == hh
                ciphers = {True: (init.split()[0], resp.split()[1]),
                           False: (resp.split()[0], init.split()[1])}
        else:
            send, recv = ciphers[initiator_sends]
            assert send.encrypt_with_ad(b"", payload) == expected, f"message {i}"
            assert recv.decrypt_with_ad(b"", expected) == payload, f"message {i}"
    assert ciphers is not None, "the vector never completed the handshake"


# --- the chat channel's own configuration -----------------------------------


def _chat_pair(client_prologue=noise.CHAT_PROLOGUE, server_prologue=noise.CHAT_PROLOGUE):
    server_private, server_public = noise.generate_keypair()
    client = noise.HandshakeState(noise.CHAT_PROTOCOL, initiator=True, prologue=client_prologue)
    server = noise.HandshakeState(
        noise.CHAT_PROTOCOL, initiator=False, prologue=server_prologue, s=server_private
    )
    return client, server, server_public


def _connected():
    """Client and server after a full handshake: (c_send, c_recv, s_send, s_recv)."""
    client, server, _ = _chat_pair()
    server.read_message(client.write_message(b"hello"))
    client.read_message(server.write_message(b"server hello"))
    return client.split() + server.split()


def test_keypair_helpers():
    private, public = noise.generate_keypair()
    assert len(private) == len(public) == 32
    assert noise.public_key(private) == public
    fp = noise.fingerprint(public)
    assert fp.startswith("SHA256:") and "=" not in fp and len(fp) == len("SHA256:") + 43
    assert noise.fingerprint(noise.generate_keypair()[1]) != fp


def test_chat_handshake_and_transport_round_trip():
    client, server, server_public = _chat_pair()
    assert client.my_turn and not server.my_turn
    m1 = client.write_message(b"hello")
    assert server.read_message(m1) == b"hello"
    assert not client.complete and not server.complete
    m2 = server.write_message(b"server hello")
    assert client.read_message(m2) == b"server hello"
    assert client.complete and server.complete
    assert client.remote_static == server_public
    assert server.remote_static is None  # NX: the client stays anonymous
    assert client.handshake_hash == server.handshake_hash

    c_send, c_recv = client.split()
    s_send, s_recv = server.split()
    assert client.split() == (c_send, c_recv)  # same objects: no nonce reuse
    for i in range(5):
        text = f"message {i}".encode()
        frame = c_send.encrypt_with_ad(b"", text)
        assert text not in frame
        assert s_recv.decrypt_with_ad(b"", frame) == text
        assert c_recv.decrypt_with_ad(b"", s_send.encrypt_with_ad(b"", text * 2)) == text * 2
    assert c_recv.decrypt(s_send.encrypt(b"")) == b""


@pytest.mark.parametrize("position", [0, 5, -17, -1])
def test_altered_transport_ciphertext_fails(position):
    c_send, _, _, s_recv = _connected()
    frame = bytearray(c_send.encrypt_with_ad(b"", b"a chat message"))
    frame[position] ^= 0x01
    with pytest.raises(NoiseError):
        s_recv.decrypt_with_ad(b"", bytes(frame))


def test_altered_handshake_message_fails():
    client, server, _ = _chat_pair()
    server.read_message(client.write_message(b"hello"))
    m2 = bytearray(server.write_message(b"server hello"))
    m2[40] ^= 0x80  # inside the encrypted static key
    with pytest.raises(NoiseError):
        client.read_message(bytes(m2))
    # The handshake is dead after a failure, even for a genuine message.
    with pytest.raises(NoiseError):
        client.read_message(b"")


def test_replayed_transport_message_fails():
    c_send, _, _, s_recv = _connected()
    frame = c_send.encrypt_with_ad(b"", b"pay 10 coins")
    assert s_recv.decrypt_with_ad(b"", frame) == b"pay 10 coins"
    with pytest.raises(NoiseError):
        s_recv.decrypt_with_ad(b"", frame)


def test_reordered_transport_messages_fail():
    c_send, _, _, s_recv = _connected()
    first = c_send.encrypt_with_ad(b"", b"first")
    second = c_send.encrypt_with_ad(b"", b"second")
    with pytest.raises(NoiseError):
        s_recv.decrypt_with_ad(b"", second)
    assert s_recv.decrypt_with_ad(b"", first) == b"first"
    assert s_recv.decrypt_with_ad(b"", second) == b"second"


def test_failed_decrypt_does_not_advance_receiver():
    c_send, _, _, s_recv = _connected()
    genuine = c_send.encrypt_with_ad(b"", b"genuine")
    following = c_send.encrypt_with_ad(b"", b"following")
    forged = bytes(len(genuine))
    for bad in (forged, genuine[:-1], b"short", b""):
        with pytest.raises(NoiseError):
            s_recv.decrypt_with_ad(b"", bad)
    assert s_recv.n == 0
    assert s_recv.decrypt_with_ad(b"", genuine) == b"genuine"
    assert s_recv.decrypt_with_ad(b"", following) == b"following"


def test_too_long_transport_message_fails_on_write_and_read():
    c_send, _, _, s_recv = _connected()
    assert noise.MAX_PAYLOAD_LEN == noise.MAX_MESSAGE_LEN - 16 == 65519
    with pytest.raises(NoiseError):
        c_send.encrypt_with_ad(b"", bytes(noise.MAX_PAYLOAD_LEN + 1))
    with pytest.raises(NoiseError):
        s_recv.decrypt_with_ad(b"", bytes(noise.MAX_MESSAGE_LEN + 1))
    # The refused calls used no nonce: the largest message still goes through.
    frame = c_send.encrypt_with_ad(b"", bytes(noise.MAX_PAYLOAD_LEN))
    assert len(frame) == noise.MAX_MESSAGE_LEN
    assert s_recv.decrypt_with_ad(b"", frame) == bytes(noise.MAX_PAYLOAD_LEN)


def test_too_long_handshake_message_fails_on_write_and_read():
    client, server, _ = _chat_pair()
    # NX message 1 is e (32 bytes) plus a plaintext payload.
    with pytest.raises(NoiseError):
        client.write_message(bytes(noise.MAX_MESSAGE_LEN - 32 + 1))
    m1 = client.write_message(bytes(noise.MAX_MESSAGE_LEN - 32))  # still usable
    assert len(m1) == noise.MAX_MESSAGE_LEN
    server.read_message(m1)
    # Message 2 is e, encrypted s (48 bytes) and an encrypted payload.
    with pytest.raises(NoiseError):
        server.write_message(bytes(noise.MAX_MESSAGE_LEN - 32 - 48 - 16 + 1))
    _, other_server, _ = _chat_pair()
    with pytest.raises(NoiseError):
        other_server.read_message(bytes(noise.MAX_MESSAGE_LEN + 1))


def test_prologue_mismatch_fails_handshake():
    client, server, _ = _chat_pair(client_prologue=b"spchat/3")
    # Message 1 is unauthenticated in NX; the mismatch shows at message 2.
    server.read_message(client.write_message(b"hello"))
    m2 = server.write_message(b"server hello")
    with pytest.raises(NoiseError):
        client.read_message(m2)
    assert not client.complete


def test_wrong_turn_fails():
    client, server, _ = _chat_pair()
    with pytest.raises(NoiseError):
        server.write_message(b"too early")
    with pytest.raises(NoiseError):
        client.read_message(b"x" * 64)
    m1 = client.write_message(b"hello")
    with pytest.raises(NoiseError):
        client.write_message(b"again")
    server.read_message(m1)
    client.read_message(server.write_message(b""))
    for side in (client, server):
        with pytest.raises(NoiseError):
            side.write_message(b"after completion")
        with pytest.raises(NoiseError):
            side.read_message(b"after completion")


def test_split_before_completion_fails():
    client, _, _ = _chat_pair()
    with pytest.raises(NoiseError):
        client.split()
    with pytest.raises(NoiseError):
        client.handshake_hash


@pytest.mark.parametrize("keep", [0, 1, 31])
def test_truncated_first_handshake_message_fails(keep):
    client, server, _ = _chat_pair()
    m1 = client.write_message(b"")
    with pytest.raises(NoiseError):
        server.read_message(m1[:keep])


@pytest.mark.parametrize("keep", [0, 31, 32, 64, 79, 80, 95, -1])
def test_truncated_second_handshake_message_fails(keep):
    client, server, _ = _chat_pair()
    server.read_message(client.write_message(b"hello"))
    m2 = server.write_message(b"server hello")
    with pytest.raises(NoiseError):
        client.read_message(m2[:keep])


def test_low_order_ephemeral_key_fails():
    _, server, _ = _chat_pair()
    server.read_message(bytes(32))  # the all-zero point: DH result would be 0
    with pytest.raises(NoiseError):
        server.write_message(b"")


def test_bad_protocol_names_fail():
    for name in [
        "Noise_NX_448_AESGCM_SHA256",
        "Noise_NX_25519_AESGCM_MD5",
        "Noise_NX_25519_Serpent_SHA256",
        "Noise_ZZ_25519_AESGCM_SHA256",
        "Noise_NNpsk3_25519_AESGCM_SHA256",
        "Noise_XXfallback_25519_AESGCM_SHA256",
        "Noise_NX_25519_AESGCM",
        "",
    ]:
        with pytest.raises(NoiseError):
            noise.parse_protocol_name(name)


def test_missing_keys_and_psks_fail_at_construction():
    with pytest.raises(NoiseError):
        noise.HandshakeState(noise.CHAT_PROTOCOL, initiator=False)  # no s
    with pytest.raises(NoiseError):
        noise.HandshakeState("Noise_NK_25519_AESGCM_SHA256", initiator=True)  # no rs
    with pytest.raises(NoiseError):
        noise.HandshakeState("Noise_NNpsk0_25519_AESGCM_SHA256", initiator=True)  # no psk
    with pytest.raises(NoiseError):
        noise.HandshakeState(
            "Noise_NNpsk0_25519_AESGCM_SHA256", initiator=True, psks=[b"short"]
        )


def test_nonce_exhaustion_and_rekey():
    c_send, _, _, s_recv = _connected()
    c_send.set_nonce(2**64 - 2)
    s_recv.set_nonce(2**64 - 2)
    assert s_recv.decrypt_with_ad(b"", c_send.encrypt_with_ad(b"", b"last")) == b"last"
    with pytest.raises(NoiseError):
        c_send.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NoiseError):
        s_recv.decrypt_with_ad(b"", bytes(32))

    c_send, _, _, s_recv = _connected()
    c_send.rekey()
    s_recv.rekey()
    assert s_recv.decrypt_with_ad(b"", c_send.encrypt_with_ad(b"", b"rekeyed")) == b"rekeyed"
