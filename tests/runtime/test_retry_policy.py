"""Which shard failures the driver retries: faults of the moment yes, failures that recur on every try no."""

import errno

import pytest
import torch

from segcore.io.retry import RetriesExhausted
from segcore.io.shards import ShardError
from segcore.runtime.driver import worth_retrying


def exhausted() -> RetriesExhausted:
    try:
        try:
            raise OSError(errno.EREMOTEIO, "internal error")
        except OSError as cause:
            raise RetriesExhausted("write s3://b/x: gave up after 3 attempts") from cause
    except RetriesExhausted as error:
        return error


@pytest.mark.parametrize("error", [
    OSError(errno.EREMOTEIO, "internal error"), OSError(errno.ECONNRESET, "reset"), ConnectionError("refused"),
    TimeoutError("read timed out"), exhausted(), MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory"),
], ids=repr)
def test_faults_of_the_moment_are_retried(error):
    assert worth_retrying(error)


@pytest.mark.parametrize("error", [
    ShardError("s3://b/corpus-00002.tar is not a readable tar: bad header"), OSError(errno.ENOSPC, "No space left"),
    FileNotFoundError("s3://b/gone.tar"), PermissionError("AccessDenied"), ValueError("a bug"),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied"), KeyError("image_id"),
], ids=repr)
def test_failures_that_recur_are_not(error):
    assert not worth_retrying(error)
