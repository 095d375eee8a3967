"""The registries' declarations: which kinds of node and resource exist, and which logical
field types. Each is declared here once; the dialect registry, the transport registry, the
connection types, the validators, the JSON Schema's enums and the resource-kind steps are
checked against these by ``tests/test_registries.py``, which names whatever a new kind forgot.
"""

from __future__ import annotations

#: Front-end databases (前置库): one dialect module each under ``connectors/``.
DATABASE_KINDS: tuple[str, ...] = ("postgresql", "mysql", "oracle", "sqlite")
#: File nodes (FTP/SFTP directories of a front-end machine, or a local directory).
FILE_NODE_KINDS: tuple[str, ...] = ("sftp", "ftp", "ftps", "local")
#: Upstream interface gateways (a provincial or national platform's API): a base URL and an
#: authentication scheme instead of a connection; the providers of ``api`` resources.
HTTP_NODE_KINDS: tuple[str, ...] = ("http",)
NODE_KINDS: tuple[str, ...] = DATABASE_KINDS + FILE_NODE_KINDS + HTTP_NODE_KINDS
#: Node kinds on which the engine provisions departments' accounts through an admin
#: connection (``connectors/provision/``, one provisioner each).
PROVISIONED_KINDS: tuple[str, ...] = ("postgresql", "mysql", "sftp", "ftp")

#: How the city authenticates to an http node (``connectors/http/schemes/``, one module each):
#: ``none``; ``header`` (a credential in a named header); ``tif`` (the platform's signed headers).
AUTH_SCHEMES: tuple[str, ...] = ("none", "header", "tif")

#: Resource kinds (库表 / 文件 / 文件夹 / 服务接口).
RESOURCE_KINDS: tuple[str, ...] = ("table", "file", "folder", "api")

#: Domain validators a field's ``rules: {validator: ...}`` may name (``quality.validators``).
VALIDATOR_NAMES: tuple[str, ...] = ("uscc", "resident_id", "region_code", "mobile", "phone")

#: Logical field types of the catalog, mapped to each dialect's and Arrow's types.
LOGICAL_TYPES: tuple[str, ...] = (
    "smallint",
    "integer",
    "bigint",
    "decimal",
    "double",
    "varchar",
    "char",
    "text",
    "date",
    "timestamp",  # a wall-clock time in Asia/Shanghai, as government databases keep them
    "timestamptz",  # an instant (docs/runs.md, Dialects: how each holds one)
    "boolean",
)
