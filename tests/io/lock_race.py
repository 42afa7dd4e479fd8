"""A contender process for the simultaneous-start test of the output lock (spawned, so importable by name)."""

from __future__ import annotations


def contend(root: str, rounds: int, barrier, results) -> None:
    """For each round, waits for every contender, then tries to take the lock of ``root/<round>``; reports
    ``(round, granted)``. Never releases: a release would let a later contender in within the same round."""
    from segcore.io.commit import Output
    from segcore.io.lock import JobLocked, acquire

    for round_number in range(rounds):
        output = Output.open(f"{root}/{round_number:05d}")
        barrier.wait()
        try:
            acquire(output, lease_s=600)
            results.put((round_number, True))
        except JobLocked:
            results.put((round_number, False))
        except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
            results.put((round_number, repr(error)))
