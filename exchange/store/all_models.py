"""Every mapped table of the metadata store, imported so that Alembic and ``Base.metadata``
see them all. A feature that adds tables in its own ``models`` module adds one import here."""

from exchange.files import models as _files_models  # noqa: F401
from exchange.gateway import models as _gateway_models  # noqa: F401
from exchange.quality import models as _quality_models  # noqa: F401
from exchange.store.models import Base
from exchange.workflow import models as _workflow_models  # noqa: F401

__all__ = ["Base"]
