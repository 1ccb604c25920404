"""herald's benchmark harness (issue 7): throughput, latency, sockets, recovery, scaling.

Run with ``bash bench/run`` or ``herald bench`` (see README, "Benchmarks").
"""
