"""notarium's Python client: trust nothing the server says.

``Client`` (synchronous) and ``AsyncClient`` verify every receipt against the pinned service
certificate, keep the last verified signed root and accept a newer one only with a consistency
proof (``sync``); ``ForkError`` carries the evidence when a ledger forks or rolls back.
"""

from notarium.client.client import AsyncClient, Client
from notarium.client.errors import ApiError, ClientError, ForkError, NotCommittedError, UnreachableError
from notarium.client.operations import Appended, Entry, User, VerifiedReceipt
from notarium.client.profile import Profile, load_profile

__all__ = [
    "ApiError",
    "Appended",
    "AsyncClient",
    "Client",
    "ClientError",
    "Entry",
    "ForkError",
    "NotCommittedError",
    "Profile",
    "UnreachableError",
    "User",
    "VerifiedReceipt",
    "load_profile",
]
