"""One request, one answer, on a raw socket, at a version we choose.

kafka-python 3's generated message classes encode and decode every
version of every API (flexible versions and tagged fields included), so a
check can look at fields no client library exposes, such as KIP-951's
leader hints or OffsetForLeaderEpoch's answer.
"""
import socket
import struct

from common import recv_exactly


def call(addr, request, response_class, timeout=10):
    """Sends `request` (a versioned kafka-python message) to addr
    ("host:port") and decodes the answer at the same version."""
    version = request.version
    request.with_header(correlation_id=1, client_id="chronik-wire-check")
    frame = request.encode(version=version, header=True, framed=True)
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(frame)
        (size,) = struct.unpack(">i", recv_exactly(sock, 4))
        body = recv_exactly(sock, size)
    return response_class.decode(body, version=version, header=True)


def record_batch(values):
    """A v2 record batch of `values` (bytes), as a producer writes it."""
    from kafka.record.default_records import DefaultRecordBatchBuilder
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    return bytes(builder.build())


def topic_partitions(addr, topic):
    """(topic id, {partition: (leader, leader epoch)}) from Metadata v12."""
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse
    T = MetadataRequest.MetadataRequestTopic
    answer = call(addr, MetadataRequest[12](topics=[T(topic_id=None, name=topic)],
                                            allow_auto_topic_creation=False,
                                            include_topic_authorized_operations=False),
                  MetadataResponse)
    for t in answer.topics:
        if t.name == topic:
            return t.topic_id, {p.partition_index: (p.leader_id, p.leader_epoch) for p in t.partitions}
    return None, {}
