"""
Aggregate SHA-256 throughput: hashlib against the multi-buffer mill.

Not a test: run it by hand on a quiet machine,

    python3 tests/benchhash.py [--mib 64] [--chunk 262144]

N threads each hash their own stream of --mib MiB, fed in --chunk byte
chunks (like the upload threads do), for N = 1, 2, 4, 8.  Prints the
aggregate MB/s (wall clock) and the CPU time the process spent per MB, for
hashlib (every thread hashes on its own) and for the mill (one kernel call
hashes up to eight streams).  The second figure matters on a 2-core machine:
what hashing does not burn, the reactor gets.
"""

import argparse
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zotwist import sha256mb  # noqa: E402


def _measure(factory, streams: int, data: bytes, chunk: int, mib: int) -> tuple[float, float]:
    """
    @return: C{(MB/s, CPU ms per MB)} for C{streams} threads each hashing
        C{mib} MiB of C{data} in chunks of C{chunk} bytes.
    """
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    rounds = max(1, mib * 1024 * 1024 // len(data))
    barrier = threading.Barrier(streams + 1)
    results = []

    def work():
        hasher = factory()
        barrier.wait()
        for _ in range(rounds):
            for piece in pieces:
                hasher.update(piece)
        results.append(hasher.hexdigest())

    threads = [threading.Thread(target=work) for _ in range(streams)]
    for thread in threads:
        thread.start()
    barrier.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    expected = hashlib.sha256(data * rounds).hexdigest() if rounds * len(data) < 2**28 else None
    if expected is not None and set(results) != {expected}:
        raise SystemExit(f"wrong digest from {factory}")
    megabytes = streams * rounds * len(data) / 1e6
    return megabytes / wall, 1000 * cpu / megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB per stream")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per update")
    args = parser.parse_args()
    if not sha256mb.available():
        raise SystemExit(
            "the multi-buffer kernel is not built: python3 setup.py build_ext --inplace"
        )
    print(f"multi-buffer: {sha256mb.describe()}")
    data = os.urandom(16 * 1024 * 1024)
    print(
        f"{'streams':>7} {'hashlib MB/s':>13} {'ms CPU/MB':>10} {'mill MB/s':>10} {'ms CPU/MB':>10}"
    )
    for streams in (1, 2, 4, 8):
        plain = _measure(hashlib.sha256, streams, data, args.chunk, args.mib)
        mill = _measure(sha256mb.new, streams, data, args.chunk, args.mib)
        print(f"{streams:>7} {plain[0]:>13.0f} {plain[1]:>10.2f} {mill[0]:>10.0f} {mill[1]:>10.2f}")
    mill = sha256mb.defaultMill()
    print(
        f"mill: {mill.rounds} rounds, {mill.laneRounds / max(1, mill.rounds):.2f} lanes per round"
    )


if __name__ == "__main__":
    main()
