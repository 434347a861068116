"""Object store: photos and other blobs, on S3 or in a local folder, with the same semantics.

Callers type a store as :class:`ObjectStore` and get one from :func:`object_store_from_settings`. The modules:

* :mod:`~pzone.storage.protocol`: the ``ObjectStore`` protocol and the semantics both backends keep, its errors
  and values, and :func:`check_uploaded_object` (the size re-check after a presigned PUT).
* :mod:`~pzone.storage.keys`: object keys, content types and limits, checked alike by both backends.
* :mod:`~pzone.storage.local`: :class:`LocalObjectStore`, plain files under a root folder, and its HMAC-signed URLs.
* :mod:`~pzone.storage.s3`: :class:`S3ObjectStore`, a bucket through boto3, with S3's own presigned URLs made by
  :mod:`~pzone.storage.presign`.
* :mod:`~pzone.storage.factory`: the store the settings ask for, and the local store's signing key.
"""

from pzone.storage.factory import local_signing_key, object_store_from_settings
from pzone.storage.keys import (
    CHUNK_SIZE,
    MAX_KEY_LENGTH,
    MAX_PRESIGN_EXPIRES_S,
    MAX_SEGMENT_LENGTH,
    content_addressed_key,
    validate_content_type,
    validate_key,
)
from pzone.storage.local import LocalObjectStore
from pzone.storage.protocol import (
    DEFAULT_CONTENT_TYPE,
    InvalidSignature,
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    ObjectStream,
    ObjectTooLarge,
    PresignedGrant,
    Readable,
    check_uploaded_object,
)
from pzone.storage.s3 import S3ObjectStore

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_LENGTH",
    "MAX_PRESIGN_EXPIRES_S",
    "MAX_SEGMENT_LENGTH",
    "InvalidSignature",
    "ListedObject",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreUnavailable",
    "ObjectStream",
    "ObjectTooLarge",
    "PresignedGrant",
    "Readable",
    "S3ObjectStore",
    "check_uploaded_object",
    "content_addressed_key",
    "local_signing_key",
    "object_store_from_settings",
    "validate_content_type",
    "validate_key",
]
