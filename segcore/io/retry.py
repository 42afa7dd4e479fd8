"""Retries of idempotent storage calls on transient errors, with exponential backoff and jitter.

What the storage stack already does (s3fs 2026.9 on aiobotocore/botocore, the default "legacy" retry mode):
botocore retries every request up to 5 attempts in all on 500/502/503/504, throttling codes and socket errors
(backoff ``rand * 2**n`` s); s3fs wraps each call in 5 more attempts, but only for network errors, truncated
bodies (aiohttp ``ClientPayloadError``) and ``SlowDown`` — a persistent ``InternalError`` gives up after
botocore's 5 (seconds), a persistent ``SlowDown`` after 25 (tens of seconds). Reads of a tar go through s3fs in
ranged GETs, each retried that way, so a broken stream is re-fetched from where it broke.

This module adds one layer, where the meaning of a call is known: a whole write under its final name is
idempotent, so ``call_with_retries`` may repeat it after the stack gave up (an outage longer than its budget, a
backend without retries of its own). The shard-level retry of the driver is the last layer (see
``segcore.runtime.driver``). Attempts multiply across layers: keep this one small.

Settings, in one place: ``RetryPolicy``'s defaults, overridden by the environment variables
``SEGCORE_IO_RETRY_ATTEMPTS``, ``SEGCORE_IO_RETRY_BASE_DELAY`` and ``SEGCORE_IO_RETRY_MAX_DELAY`` (seconds), read
when a policy is made (set them before Ray starts, or in the job's runtime_env, so actors see them too).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "SlowDownRead", "SlowDownWrite", "RequestTimeout",
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "TooManyRequests",
    "RequestLimitExceeded", "OperationAborted", "BadGateway", "GatewayTimeout", "InternalServerError",
})
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# errnos of network faults, and those s3fs gives to InternalError (EREMOTEIO) and SlowDown / 503 (EBUSY)
TRANSIENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EREMOTEIO", "EBUSY", "ETIMEDOUT", "ECONNRESET", "ECONNABORTED", "ECONNREFUSED", "EPIPE", "EAGAIN",
    "ENETUNREACH", "EHOSTUNREACH", "ENETDOWN", "ENETRESET",
) if hasattr(errno, name))
# definite answers, whatever caused them
PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def _transient_classes() -> tuple[type[BaseException], ...]:
    """Network exceptions of the HTTP clients fsspec backends use, those installed."""
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore import exceptions as boto

        classes += [boto.HTTPClientError, boto.ConnectionError, boto.IncompleteReadError]
    except ImportError:
        pass
    try:
        import aiohttp

        classes += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError]
    except ImportError:
        pass
    return tuple(classes)


_TRANSIENT_CLASSES: tuple[type[BaseException], ...] | None = None


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away on a retry: a network fault, a timeout, a 5xx / 429 / throttling answer.

    Looks through the causes too (s3fs raises an ``OSError`` whose ``__cause__`` is botocore's ``ClientError``).
    Missing files, existing files (create-only writes) and refused permissions are never transient.
    """
    global _TRANSIENT_CLASSES
    if _TRANSIENT_CLASSES is None:
        _TRANSIENT_CLASSES = _transient_classes()
    if isinstance(error, PERMANENT):
        return False
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _TRANSIENT_CLASSES):
            return True
        if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
            return True
        response = getattr(error, "response", None)  # botocore ClientError
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in TRANSIENT_CODES or status in TRANSIENT_STATUS:
                return True
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


class RetriesExhausted(OSError):
    """A transient storage error outlasted every attempt; the message names the call, ``__cause__`` is the last
    error."""


def _env_number(name: str, default: float, kind: type) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"Expected {name} to be a {kind.__name__} >= 0, but got {value!r}") from None
    if number < 0:
        raise ValueError(f"Expected {name} to be a {kind.__name__} >= 0, but got {value!r}")
    return number


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently an idempotent call is tried.

    Attributes:
        attempts: tries in all (1: no retry).
        base_delay: seconds before the first retry; doubled for each retry after it, up to ``max_delay``.
        max_delay: the longest wait between two tries, in seconds.
    """

    attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 20.0

    def __post_init__(self):
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"Expected `attempts` >= 1 and delays >= 0, but got {self}")

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        """The defaults, overridden by ``SEGCORE_IO_RETRY_ATTEMPTS``, ``_BASE_DELAY`` and ``_MAX_DELAY``."""
        return cls(
            attempts=max(1, int(_env_number("SEGCORE_IO_RETRY_ATTEMPTS", cls.attempts, int))),
            base_delay=_env_number("SEGCORE_IO_RETRY_BASE_DELAY", cls.base_delay, float),
            max_delay=_env_number("SEGCORE_IO_RETRY_MAX_DELAY", cls.max_delay, float),
        )

    def delay(self, retry: int, uniform: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): "equal jitter", between half and all of
        ``min(max_delay, base_delay * 2**(retry - 1))``, so waits grow and concurrent clients spread out."""
        cap = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return cap / 2 + uniform() * cap / 2


def call_with_retries(
    call: Callable[[], T],
    what: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Calls ``call()`` until it returns, retrying transient errors (``is_transient``) with backoff.

    Only for idempotent calls (a whole object written under its final name, a read).

    Args:
        call: the operation, without arguments.
        what: names the operation in logs and errors (e.g. "write s3://b/shards/x.parquet").
        policy: attempts and delays; None: ``RetryPolicy.from_env()``.
        sleep: waits that many seconds (tests pass a recorder).

    Raises:
        RetriesExhausted: every attempt failed with a transient error (the last one is the cause).
        Exception: the first error that is not transient, as it was raised.
    """
    policy = policy or RetryPolicy.from_env()
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == policy.attempts:
                raise RetriesExhausted(
                    f"{what}: gave up after {attempt} attempts: {type(error).__name__}: {error}") from error
            wait = policy.delay(attempt)
            logger.warning("%s failed (%s: %s); attempt %d of %d in %.2f s", what, type(error).__name__, error,
                           attempt + 1, policy.attempts, wait)
            sleep(wait)
    raise AssertionError("unreachable")
