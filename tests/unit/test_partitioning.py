"""murmur2 partitioning must match the Java client byte for byte."""

import os

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from rules.partitioning import murmur2, partition_for

# Vectors from Apache Kafka's UtilsTest (org.apache.kafka.common.utils.Utils.murmur2).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_java(data, expected):
    assert murmur2(data) == expected


@pytest.mark.parametrize("length", range(0, 40))
def test_partition_matches_aiokafka_default_partitioner(length):
    key = os.urandom(length)
    assert partition_for(key, 8) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 8


def test_str_keys_hash_their_utf8_bytes():
    assert partition_for("ü-42", 12) == partition_for("ü-42".encode(), 12)
