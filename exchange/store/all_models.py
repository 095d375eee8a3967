"""Every mapped table of the metadata store, imported so that Alembic and ``Base.metadata``
see them all. A feature that adds tables in its own ``models`` module adds one import here."""

from exchange.accounts import models as _accounts_models  # noqa: F401
from exchange.files import models as _files_models  # noqa: F401
from exchange.gateway import models as _gateway_models  # noqa: F401
from exchange.quality import models as _quality_models  # noqa: F401
from exchange.store.models import Base
from exchange.workflow import demands_models as _demands_models  # noqa: F401
from exchange.workflow import joint_models as _joint_models  # noqa: F401
from exchange.workflow import models as _workflow_models  # noqa: F401
from exchange.workflow import notices_models as _notices_models  # noqa: F401

__all__ = ["Base"]
