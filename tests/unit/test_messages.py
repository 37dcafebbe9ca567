"""``actors.messages``: vector encoding and the messages each stage publishes."""

from __future__ import annotations

import base64
import json
import math
import uuid

import dramatiq
import numpy as np
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.broker import declare_actors
from actors.messages import (
    ALL_QUEUES,
    CHUNK_QUEUE,
    COORDINATE_QUEUE,
    EMBED_QUEUE,
    PAYLOAD_VERSION,
    PLAN_QUEUE,
    WRITE_QUEUE,
    BatchPayload,
    ChunkRecord,
    FileRecord,
    NotIndexed,
    UnsupportedPayloadError,
    chunk_message,
    decode_payload,
    decode_vectors,
    embed_message,
    encode_payload,
    encode_vectors,
    plan_message,
    record_message,
    write_message,
)

JOB = uuid.UUID("6f1c2a4e-8d9b-4c1f-a2e3-123456789abc")
TOKEN = uuid.UUID("00000000-1111-2222-3333-444444444444")

# --- vectors --------------------------------------------------------------------------------------


def test_round_trip_is_bit_exact_for_float32() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((13, 384)).astype(np.float32)
    decoded = decode_vectors(encode_vectors(vectors), 384)
    assert decoded.dtype == np.float32
    assert decoded.shape == (13, 384)
    assert np.array_equal(decoded.view(np.uint32), vectors.view(np.uint32))


def test_round_trip_keeps_special_values_bit_for_bit() -> None:
    tiny = np.finfo(np.float32).smallest_subnormal
    vectors = np.array(
        [[np.nan, np.inf, -np.inf, -0.0], [0.0, tiny, -tiny, np.finfo(np.float32).max]], dtype=np.float32
    )
    decoded = decode_vectors(encode_vectors(vectors), 4)
    assert np.array_equal(decoded.view(np.uint32), vectors.view(np.uint32))


def test_float64_input_is_stored_as_its_float32_rounding() -> None:
    vectors = np.array([[1 / 3, math.pi, 1e-50, 123456789.123]], dtype=np.float64)
    decoded = decode_vectors(encode_vectors(vectors), 4)  # type: ignore[arg-type]  # float64 on purpose
    assert np.array_equal(decoded, vectors.astype(np.float32))


def test_non_contiguous_and_big_endian_inputs_round_trip() -> None:
    base = (np.arange(48).reshape(6, 8) / 7).astype(np.float32)
    for view in (base[:, ::2], base.T, base[::2]):
        decoded = decode_vectors(encode_vectors(view), view.shape[1])
        assert np.array_equal(decoded, view)
    big_endian = base.astype(">f4")
    assert np.array_equal(decode_vectors(encode_vectors(big_endian), 8), base)


def test_encoding_is_four_bytes_per_float_in_little_endian_base64() -> None:
    vectors = np.array([[1.0, -2.5]], dtype=np.float32)
    encoded = encode_vectors(vectors)
    assert base64.b64decode(encoded) == np.array([1.0, -2.5], dtype="<f4").tobytes()
    big = np.zeros((10, 384), dtype=np.float32)
    assert len(base64.b64decode(encode_vectors(big))) == 10 * 384 * 4


def test_empty_batch_round_trips_with_its_dimension() -> None:
    decoded = decode_vectors(encode_vectors(np.zeros((0, 768), dtype=np.float32)), 768)
    assert decoded.shape == (0, 768)


def test_decoding_with_a_wrong_dimension_fails_loudly() -> None:
    encoded = encode_vectors(np.ones((3, 5), dtype=np.float32))
    with pytest.raises(ValueError):
        decode_vectors(encoded, 4)


# --- messages -------------------------------------------------------------------------------------

PAYLOAD = BatchPayload(
    files=(FileRecord("a.py", "0" * 64, "python", 11, 2, (ChunkRecord(1, 2, None, "x = 1\ny = 2", "a.py"),)),),
    skipped=(NotIndexed("b.png", "binary"),),
)
WITH_VECTORS = PAYLOAD.with_vectors(np.ones((1, 4), dtype=np.float32), "ollama:fake")
WIRE = encode_payload(PAYLOAD)
WIRE_WITH_VECTORS = encode_payload(WITH_VECTORS)

BUILT = [
    (plan_message(JOB), PLAN_QUEUE, "plan_job", (str(JOB),)),
    (chunk_message(JOB, 4, TOKEN), CHUNK_QUEUE, "chunk_batch", (str(JOB), 4, str(TOKEN))),
    # Two phases (issue 12): the write message carries the chunks, the embed message only names the batch.
    (embed_message(JOB, 5, TOKEN), EMBED_QUEUE, "embed_batch", (str(JOB), 5, str(TOKEN))),
    (write_message(JOB, 6, TOKEN, PAYLOAD), WRITE_QUEUE, "write_batch", (str(JOB), 6, str(TOKEN), WIRE)),
    (record_message(JOB, 7, TOKEN), COORDINATE_QUEUE, "record_batch", (str(JOB), 7, str(TOKEN))),
]


@pytest.mark.parametrize(("message", "queue", "actor_name", "args"), BUILT, ids=[b[2] for b in BUILT])
def test_builders_address_the_right_queue_and_actor(
    message: dramatiq.Message, queue: str, actor_name: str, args: tuple
) -> None:
    assert message.queue_name == queue
    assert message.actor_name == actor_name
    assert tuple(message.args) == args
    assert message.kwargs == {}
    assert queue in ALL_QUEUES


@pytest.mark.parametrize(("message", "queue", "actor_name", "args"), BUILT, ids=[b[2] for b in BUILT])
def test_builders_match_the_registered_actors(
    message: dramatiq.Message, queue: str, actor_name: str, args: tuple
) -> None:
    broker = StubBroker()
    declared = declare_actors(broker)
    assert set(declared) == {"plan_job", "chunk_batch", "embed_batch", "write_batch", "record_batch", "stage_failed"}
    actor = broker.get_actor(message.actor_name)
    assert actor.queue_name == message.queue_name


@pytest.mark.parametrize(("message", "queue", "actor_name", "args"), BUILT, ids=[b[2] for b in BUILT])
def test_messages_survive_the_wire_encoding(
    message: dramatiq.Message, queue: str, actor_name: str, args: tuple
) -> None:
    decoded = dramatiq.Message.decode(message.encode())
    assert decoded.queue_name == queue
    assert decoded.actor_name == actor_name
    # JSON turns tuples into lists; values must otherwise be unchanged.
    assert json.loads(json.dumps(list(args))) == list(decoded.args)


@pytest.mark.parametrize(
    "message", [plan_message(JOB), chunk_message(JOB, 123456, TOKEN), record_message(JOB, 123456, TOKEN)]
)
def test_control_messages_carry_only_small_identifiers(message: dramatiq.Message) -> None:
    assert all(isinstance(arg, str | int) for arg in message.args)
    assert len(json.dumps(list(message.args))) < 100
    assert len(message.encode()) < 512


def test_each_built_message_gets_its_own_id() -> None:
    assert plan_message(JOB).message_id != plan_message(JOB).message_id


# --- typed payloads and their version ---------------------------------------------------------------


def test_payload_round_trips_through_json_with_its_version() -> None:
    wire = json.loads(json.dumps(WIRE_WITH_VECTORS))
    assert wire["version"] == PAYLOAD_VERSION
    decoded = decode_payload(wire)
    assert decoded.files == PAYLOAD.files
    assert decoded.skipped == PAYLOAD.skipped
    assert decoded.vectors is not None
    assert decoded.vectors.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert decoded.chunks[0].content == "x = 1\ny = 2"


def test_an_older_unversioned_payload_is_read_as_version_1() -> None:
    # What workers before PAYLOAD_VERSION sent: the same layout without the key.
    old = {key: value for key, value in WIRE.items() if key != "version"}
    assert decode_payload(old) == PAYLOAD


@pytest.mark.parametrize("version", [PAYLOAD_VERSION + 1, "2", None, 0])
def test_an_unknown_version_is_refused_by_name(version: object) -> None:
    with pytest.raises(UnsupportedPayloadError, match="payload version"):
        decode_payload({**WIRE, "version": version})


def test_a_malformed_payload_is_refused_not_crashed_on() -> None:
    broken = {**WIRE, "files": [{"path": "a.py"}]}
    with pytest.raises(UnsupportedPayloadError, match="malformed"):
        decode_payload(broken)


def test_the_messages_that_name_a_batch_carry_no_payload() -> None:
    # The embed stage reads the stored chunks: its message stays a few bytes however big the batch.
    assert len(embed_message(JOB, 1, TOKEN).encode()) < 400
