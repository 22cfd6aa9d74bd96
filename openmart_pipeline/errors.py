"""Errors the package raises, named for what happened.

The hierarchy::

    OpenmartError
    ├── PermanentApiError           retrying cannot help; Dagster must not retry the step
    │   ├── AuthenticationError     401 or 403: the key or the account is wrong
    │   ├── CreditLimitError        402 on a submission: the account has no credits left
    │   └── BatchValidationError    400 or 422: the server refused a batch's content
    ├── SubmitOutcomeUnknown        a submission may have reached the server; never resubmit
    ├── TransientApiError           a read failed in a way that may pass (429, 5xx, network)
    ├── UnexpectedResponseError     an answer the client cannot understand
    │   └── UnknownStatusError      a task or batch status this client does not know
    └── CreditLimitReached          a run stopped at the credit limit with lookups left

Messages never contain the API key: the client redacts it from every response excerpt,
and no exception carries request headers.
"""

from __future__ import annotations


class OpenmartError(Exception):
    """Base of every error this package raises about the Openmart API."""


class PermanentApiError(OpenmartError):
    """The API refused the request for a reason a retry cannot change."""


class AuthenticationError(PermanentApiError):
    """401 or 403: the key is missing, wrong, or the account is banned."""


class CreditLimitError(PermanentApiError):
    """402: the account's credit pool is exhausted; nothing more can be submitted."""


class BatchValidationError(PermanentApiError):
    """400 or 422 on a submission: the batch was not accepted and must not be retried."""


class SubmitOutcomeUnknown(OpenmartError):
    """A submission failed after it may have reached the server.

    The server may have created the batch and charged for it, so the client must not
    submit the same tasks again on its own.
    """


class TransientApiError(OpenmartError):
    """A read failed in a way that may pass: rate limiting, a 5xx, or a network error.

    Attributes:
        retry_after: seconds the server asked the client to wait, when it said so.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnexpectedResponseError(OpenmartError):
    """The API answered with something this client cannot understand."""


class UnknownStatusError(UnexpectedResponseError):
    """A task or batch reported a status this client does not know how to treat."""


class CreditLimitReached(OpenmartError):
    """A run hit the credit limit: what completed is written, the rest is left to do.

    Attributes:
        remaining: how many lookups were not sent because of the limit.
    """

    def __init__(self, remaining: int) -> None:
        super().__init__(
            f"The Openmart credit limit was reached: {remaining} lookup(s) were not sent "
            "and are recorded as 'credit_limit' in domain_lookups. Add credits to the "
            "account, then run again: only those lookups will be sent."
        )
        self.remaining = remaining
