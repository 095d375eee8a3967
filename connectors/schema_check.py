"""Does an existing table hold what the catalog declares? The comparison, per dialect.

A target that is *narrower* than the declared column (an ``int`` for a ``decimal(12,2)``, a
shorter ``varchar``, fewer decimals, a ``DATETIME`` without fractions for microseconds, a NOT
NULL column for a nullable field) would round, truncate or refuse values; one of another
*kind* (``text`` for a ``date``, a different time-zone kind) is *incompatible*. Either way the
subscriber is refused before a row moves. *Wider* is accepted (``bigint`` for ``integer``, a
longer ``varchar``, more precision or scale, ``text`` for ``varchar``).

Both sides are reduced to a ``Shape`` (family and sizes) and compared by ``fits(content,
container)``: for a target the declared column is the content, for a source the source column
is (whatever it holds must fit the declared column). Where a dialect represents a logical type
by a convention (booleans as ``TINYINT(1)`` or ``NUMBER(1,0)``), the engine's own column type
for the field is the reference instead. SQLite enforces no type but converts by *affinity*
(a NUMERIC column turns ``'007'`` into 7 and keeps 15 significant digits): it is judged by
that. Everything here but ``reflect`` is pure and needs no server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, oracle, postgresql
from sqlalchemy.engine import Connection

from connectors.columns import Column

NARROWER = "narrower"
INCOMPATIBLE = "incompatible"
MISSING = "missing"

#: Signed integers of ``bits``: how many digits a value may have / every value of that many fits.
_MAX_DIGITS = {8: 3, 16: 5, 24: 8, 32: 10, 64: 19}
_HOLDS_DIGITS = {8: 2, 16: 4, 24: 6, 32: 9, 64: 18}
_INT_BITS = {"smallint": 16, "integer": 32, "bigint": 64}
#: MariaDB/MySQL text types in characters (utf8mb4: up to 4 bytes each); MEDIUMTEXT (16 MB)
#: and LONGTEXT count as unbounded.
_MYSQL_TEXT = {"tinytext": 255 // 4, "text": 65535 // 4}


@dataclass(frozen=True)
class Shape:
    """A column type reduced to what decides whether values survive in it."""

    family: str  # integer | decimal | float | string | date | timestamp | boolean | other
    label: str = field(default="", compare=False)  # how it is shown
    bits: int = 0  # integer: width; float: mantissa bits (24 single, 53 double)
    unsigned: bool = False
    digits: int | None = None  # decimal: digits before the point (None: unbounded)
    scale: int | None = 0  # decimal: digits after the point (None: unbounded)
    length: int | None = None  # string: characters (None: unbounded)
    fixed: bool = False  # CHAR: pads shorter values with spaces
    fsp: int = 0  # timestamp: fractional-second digits
    zone: str = "none"  # timestamp: none (wall clock) | instant | session (MySQL TIMESTAMP)


@dataclass(frozen=True)
class Problem:
    """One column (or the key) of a table that does not hold what the catalog declares."""

    column: str
    declared: str
    found: str
    verdict: str  # narrower | incompatible | missing
    why: str

    @property
    def detail(self) -> str:
        """``declared decimal(12,2), found int: narrower (amounts would be rounded)``."""
        return f"declared {self.declared}, found {self.found}: {self.verdict} ({self.why})"

    def __str__(self) -> str:
        what = "key" if self.column.startswith("(") else "column"
        return f"{what} {self.column}: {self.detail}"


@dataclass(frozen=True)
class TableCheck:
    """An existing table compared with a spec (``exists`` False: nothing to compare)."""

    exists: bool
    problems: tuple[Problem, ...] = ()  # columns (or the key) that do not fit
    missing: tuple[str, ...] = ()  # declared columns the table lacks
    keyed: bool = True  # a primary key or unique index on exactly the declared key


def refusal(node: str, table: str, problems: Sequence[Problem]) -> str:
    """``node 'x' table t column c: declared …, found …: narrower (…); column d: …``."""
    return f"node {node!r} table {table} " + "; ".join(str(p) for p in problems)


# -- shapes -----------------------------------------------------------------------------------


def declared_label(col: Column) -> str:
    if col.type == "decimal":
        return f"decimal({col.precision},{col.scale or 0})"
    if col.type in ("varchar", "char"):
        return f"{col.type}({col.length})"
    return col.type


def declared_shape(col: Column) -> Shape:
    """The catalog's logical type as a shape (the same on every dialect)."""
    t, label = col.type, declared_label(col)
    if t in _INT_BITS:
        return Shape("integer", label, bits=_INT_BITS[t])
    if t == "decimal":
        precision, scale = col.precision or 38, col.scale or 0
        return Shape("decimal", label, digits=precision - scale, scale=scale)
    if t == "double":
        return Shape("float", label, bits=53)
    if t in ("varchar", "char", "text"):
        return Shape("string", label, length=col.length if t != "text" else None, fixed=t == "char")
    if t == "date":
        return Shape("date", label)
    if t in ("timestamp", "timestamptz"):
        return Shape("timestamp", label, fsp=6, zone="instant" if t == "timestamptz" else "none")
    if t == "boolean":
        return Shape("boolean", label)
    return Shape("other", label)


def shape_of(typ: sa.types.TypeEngine[Any], dialect: sa.engine.Dialect) -> Shape:
    """A type as a dialect reflects it (or as the connector creates it), as a shape."""
    label = _label(typ, dialect)
    name = dialect.name
    if isinstance(typ, oracle.NUMBER) or (name == "oracle" and isinstance(typ, sa.Integer)):
        precision = getattr(typ, "precision", None)
        scale = getattr(typ, "scale", None) if isinstance(typ, oracle.NUMBER) else 0
        if precision is None:  # NUMBER: any decimal; NUMBER(*,0) / INTEGER: 38 digits
            return Shape("decimal", label, digits=38 if scale == 0 else None, scale=scale)
        return Shape("decimal", label, digits=precision - (scale or 0), scale=scale or 0)
    if isinstance(typ, sa.Boolean):
        return Shape("boolean", label)
    if isinstance(typ, sa.Float):  # before Numeric: FLOAT, REAL, DOUBLE are Numeric too
        return Shape("float", label, bits=_float_bits(typ, name))
    if isinstance(typ, sa.Numeric) and not isinstance(typ, sa.Integer):
        unsigned = bool(getattr(typ, "unsigned", False))
        if typ.precision is None:
            return Shape("decimal", label, digits=None, scale=None, unsigned=unsigned)
        scale = typ.scale or 0
        return Shape("decimal", label, digits=typ.precision - scale, scale=scale, unsigned=unsigned)
    if isinstance(typ, sa.Integer):
        return Shape(
            "integer", label, bits=_int_bits(typ), unsigned=bool(getattr(typ, "unsigned", False))
        )
    if isinstance(typ, (sa.Enum, postgresql.ENUM, mysql.SET)):
        return Shape("other", label)
    if isinstance(typ, sa.String):
        return Shape("string", label, length=_string_length(typ, name), fixed=_fixed(typ))
    if isinstance(typ, sa.DateTime):  # Oracle DATE is one: a date and a time, to the second
        if isinstance(typ, oracle.DATE):
            return Shape("timestamp", label, fsp=0)
        if isinstance(typ, mysql.TIMESTAMP):  # stored in UTC, read in the session's zone
            return Shape("timestamp", label, fsp=typ.fsp or 0, zone="session")
        if isinstance(typ, mysql.DATETIME):
            return Shape("timestamp", label, fsp=typ.fsp or 0)
        zone = getattr(typ, "timezone", False) or getattr(typ, "local_timezone", False)
        precision = getattr(typ, "precision", None)  # PostgreSQL; Oracle: not reflected
        return Shape(
            "timestamp",
            label,
            fsp=6 if precision is None else precision,
            zone="instant" if zone else "none",
        )
    if isinstance(typ, sa.Date):
        return Shape("date", label)
    return Shape("other", label)


def _label(typ: sa.types.TypeEngine[Any], dialect: sa.engine.Dialect) -> str:
    try:
        return " ".join(typ.compile(dialect=dialect).lower().split())
    except Exception:  # noqa: BLE001 - a type the dialect cannot render (NullType)
        return type(typ).__name__.lower()


def _int_bits(typ: sa.types.TypeEngine[Any]) -> int:
    if isinstance(typ, mysql.TINYINT):
        return 8
    if isinstance(typ, mysql.MEDIUMINT):
        return 24
    if isinstance(typ, sa.SmallInteger):
        return 16
    if isinstance(typ, sa.BigInteger):
        return 64
    return 32


def _float_bits(typ: sa.types.TypeEngine[Any], dialect: str) -> int:
    if isinstance(typ, oracle.FLOAT):  # Oracle FLOAT(b) is a NUMBER of b binary digits
        return getattr(typ, "binary_precision", None) or 126
    if isinstance(typ, sa.REAL):  # Oracle's REAL is FLOAT(63)
        return 63 if dialect == "oracle" else 24
    if isinstance(typ, oracle.BINARY_FLOAT):
        return 24
    if isinstance(typ, (sa.Double, sa.DOUBLE_PRECISION, mysql.DOUBLE, oracle.BINARY_DOUBLE)):
        return 53
    precision = getattr(typ, "precision", None)
    if dialect == "mysql":  # FLOAT is single precision; FLOAT(p) above 24 is a DOUBLE
        return 53 if precision is not None and precision > 24 else 24
    return 24 if precision is not None and precision <= 24 else 53


def _string_length(typ: sa.String, dialect: str) -> int | None:
    kind = type(typ).__name__.lower()
    if dialect == "mysql" and kind in _MYSQL_TEXT:
        return _MYSQL_TEXT[kind]
    if isinstance(typ, sa.Text):
        return None
    return typ.length


def _fixed(typ: sa.String) -> bool:
    return isinstance(typ, (sa.CHAR, sa.NCHAR)) and not isinstance(typ, (sa.VARCHAR, sa.NVARCHAR))


# -- the comparison ---------------------------------------------------------------------------


def fits(content: Shape, container: Shape) -> tuple[str, str] | None:
    """Whether every value of ``content`` survives in ``container``: None, or (verdict, why)."""
    c, k = content, container
    if c.family == "integer":
        return _integer_into(c, k)
    if c.family == "decimal":
        return _decimal_into(c, k)
    if c.family == "float":
        if k.family == "float":
            return None if k.bits >= c.bits else (NARROWER, "values would lose precision")
        return INCOMPATIBLE, f"floating-point values do not convert to {k.label} exactly"
    if c.family == "string":
        return _string_into(c, k)
    if c.family == "date":
        if k.family == "date" or (k.family == "timestamp" and k.zone == "none"):
            return None
        return INCOMPATIBLE, f"dates do not convert to {k.label}"
    if c.family == "timestamp":
        return _timestamp_into(c, k)
    if c.family == "boolean":
        return (
            None
            if k.family == "boolean"
            else (INCOMPATIBLE, f"booleans do not convert to {k.label}")
        )
    if k.family == "other" and c.label == k.label:
        return None
    return INCOMPATIBLE, f"the engine does not convert {c.label} to {k.label}"


def _integer_into(c: Shape, k: Shape) -> tuple[str, str] | None:
    if k.family == "integer":
        if k.unsigned and not c.unsigned:
            return NARROWER, "negative values would be refused"
        needed = c.bits + (1 if c.unsigned and not k.unsigned else 0)
        return None if k.bits >= needed else (NARROWER, "large values would not fit")
    if k.family == "decimal":
        if k.unsigned and not c.unsigned:
            return NARROWER, "negative values would be refused"
        if k.digits is not None and k.digits < _MAX_DIGITS[c.bits]:
            return NARROWER, f"values of more than {k.digits} digits would not fit"
        return None
    if k.family == "float":
        exact = 53 if k.bits >= 53 else 24
        return None if c.bits < exact else (NARROWER, "large integers would be rounded")
    return INCOMPATIBLE, f"integers do not convert to {k.label}"


def _decimal_into(c: Shape, k: Shape) -> tuple[str, str] | None:
    if k.family == "decimal":
        if k.scale is not None and (c.scale is None or c.scale > k.scale):
            return NARROWER, "fewer decimals: amounts would be rounded"
        if k.digits is not None and (c.digits is None or c.digits > k.digits):
            return NARROWER, "fewer integer digits: large amounts would not fit"
        if k.unsigned and not c.unsigned:
            return NARROWER, "negative amounts would be refused"
        return None
    if k.family == "integer":
        if c.scale is None or c.scale > 0:
            return NARROWER, "amounts would be rounded"
        if k.unsigned:
            return NARROWER, "negative amounts would be refused"
        if c.digits is None or c.digits > _HOLDS_DIGITS[k.bits]:
            return NARROWER, "large amounts would not fit"
        return None
    if k.family == "float":
        return NARROWER, "decimals would be stored as binary floating point and rounded"
    return INCOMPATIBLE, f"decimals do not convert to {k.label}"


def _string_into(c: Shape, k: Shape) -> tuple[str, str] | None:
    if k.family != "string":
        return INCOMPATIBLE, f"text does not convert to {k.label}"
    if k.fixed and (not c.fixed or c.length != k.length):
        return INCOMPATIBLE, f"CHAR pads shorter values to {k.length} characters"
    if k.length is not None and (c.length is None or c.length > k.length):
        return NARROWER, f"values longer than {k.length} characters would not fit"
    return None


def _timestamp_into(c: Shape, k: Shape) -> tuple[str, str] | None:
    if k.family == "timestamp":
        if k.zone != c.zone:
            return INCOMPATIBLE, f"a different time-zone kind: {_ZONE[c.zone]} vs {_ZONE[k.zone]}"
        if k.fsp < c.fsp:
            if k.fsp == 0:
                return NARROWER, "no fractional seconds: microseconds would be lost"
            return NARROWER, f"{k.fsp} fractional digits: microseconds would be rounded"
        return None
    if k.family == "date":
        return NARROWER, "times of day would be lost"
    return INCOMPATIBLE, f"timestamps do not convert to {k.label}"


_ZONE = {
    "none": "wall-clock time",
    "instant": "an instant with a time zone",
    "session": "converted through the session time zone",
}


def column_problem(
    col: Column,
    expected: sa.types.TypeEngine[Any],
    found: sa.types.TypeEngine[Any],
    dialect: sa.engine.Dialect,
    *,
    source: bool = False,
) -> Problem | None:
    """How a table's column of type ``found`` compares with the declared ``col``, whose type
    on this dialect the engine makes ``expected``. For a target (``source`` False) the
    declared values must survive in ``found``; for a source, ``found``'s values in the
    declared column."""
    if dialect.name == "sqlite":
        return None if source else _sqlite_problem(col, found, dialect)
    declared, own, got = declared_shape(col), shape_of(expected, dialect), shape_of(found, dialect)
    if got == own:
        return None  # the very type the engine creates for the field
    if source:  # what the engine reads: a MySQL TIMESTAMP as an instant, CHAR unpadded
        got = replace(got, zone="instant") if got.zone == "session" else got
        declared = replace(declared, fixed=False)
    verdict = fits(got, declared) if source else fits(declared, got)
    if verdict is not None and fits(declared, own) is not None:
        # A logical type the dialect keeps by a convention (a boolean as TINYINT(1), an
        # instant as a UTC DATETIME(6)): what fits the engine's own column type fits.
        verdict = fits(got, own) if source else fits(own, got)
    if verdict is None:
        return None
    return Problem(col.name, declared.label, got.label, *verdict)


# SQLite converts a value to the column's affinity, decided by the declared type's name.
def sqlite_affinity(declared: str) -> str:
    """SQLite's rules (datatype3.html, 3.1): INTEGER, TEXT, BLOB, REAL or NUMERIC."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not t or "BLOB" in t or t == "NULL":
        return "BLOB"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _sqlite_problem(
    col: Column, found: sa.types.TypeEngine[Any], dialect: sa.engine.Dialect
) -> Problem | None:
    label = "" if isinstance(found, sa.types.NullType) else _label(found, dialect)
    affinity = sqlite_affinity(label)
    found_label = f"{label or 'no type'} ({affinity.lower()} affinity)"
    verdict: tuple[str, str] | None = None
    t = col.type
    if t in ("varchar", "char", "text"):
        if affinity not in ("TEXT", "BLOB"):
            verdict = INCOMPATIBLE, "text that looks like a number ('007') would become one"
    elif t in _INT_BITS:
        if affinity == "TEXT":
            verdict = INCOMPATIBLE, "integers would be stored as text"
        elif affinity == "REAL" and t == "bigint":
            verdict = NARROWER, "integers beyond 2**53 would be rounded"
    elif t == "decimal":
        if affinity not in ("TEXT", "BLOB") and (col.precision or 38) > 15:
            verdict = NARROWER, "stored as floating point: only 15 significant digits are kept"
    elif t in ("double", "boolean"):
        if affinity == "TEXT":
            verdict = INCOMPATIBLE, f"{t} values would be stored as text"
    if verdict is None:
        return None
    return Problem(col.name, declared_label(col), found_label, *verdict)


# -- whole tables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reflected:
    """A table as the database has it: its columns (as ``Inspector.get_columns`` returns
    them), its primary key and the column sets of its unique constraints and indexes."""

    columns: tuple[dict[str, Any], ...]
    primary_key: tuple[str, ...]
    unique: tuple[frozenset[str], ...] = ()
    charset: str | None = None  # MariaDB/MySQL: the table's default character set


def reflect(conn: Connection, name: str, schema: str | None) -> Reflected | None:
    """Read a table's columns and keys (None when there is no such table)."""
    insp = sa.inspect(conn)
    if not insp.has_table(name, schema):
        return None
    columns = tuple(dict(c) for c in insp.get_columns(name, schema))
    pk = tuple(insp.get_pk_constraint(name, schema).get("constrained_columns") or ())
    unique = [frozenset(c.lower() for c in u["column_names"]) for u in _uniques(insp, name, schema)]
    charset = None
    if conn.dialect.name == "mysql":
        charset = insp.get_table_options(name, schema).get("mysql_default charset")
    return Reflected(columns, pk, tuple(unique), charset)


def column_names(conn: Connection, name: str, schema: str | None) -> list[str] | None:
    """A table's (or view's) column names as the database has them, in its order: one
    reflection query, the cheap check a run makes before it extracts (None: no such table)."""
    try:
        return [c["name"] for c in sa.inspect(conn).get_columns(name, schema)]
    except sa.exc.NoSuchTableError:
        return None


def lacking(fields: Sequence[Column], names: Sequence[str]) -> list[str]:
    """The fields no column of ``names`` holds (compared without case, as ``_matched``)."""
    have = {n.lower() for n in names}
    return [f.name for f in fields if f.name.lower() not in have]


def source_lacks(
    conn: Connection, node: str, name: str, schema: str | None, fields: Sequence[Column]
) -> str | None:
    """Why a query of a provider's table failed, when its columns are why: the table is not
    there, or declared fields have no column (named with the columns it has). None when every
    field has a column: the query failed for another reason."""
    names = column_names(conn, name, schema)
    table = f"source table {f'{schema}.{name}' if schema else name} on node {node!r}"
    if names is None:
        return f"{table} does not exist"
    missing = lacking(fields, names)
    if not missing:
        return None
    return (
        f"{table} has no column {', '.join(map(repr, missing))} "
        f"({'field' if len(missing) == 1 else 'fields'} {', '.join(missing)}); "
        f"its columns are: {', '.join(names)}"
    )


def _uniques(insp: sa.Inspector, name: str, schema: str | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    try:
        found += [dict(u) for u in insp.get_unique_constraints(name, schema)]
    except NotImplementedError:
        pass
    found += [
        {"column_names": [c for c in i["column_names"] if c is not None]}
        for i in insp.get_indexes(name, schema)
        if i.get("unique")
    ]
    return found


def _has_key(found: Reflected, key: Sequence[str]) -> bool:
    want = frozenset(k.lower() for k in key)
    return frozenset(c.lower() for c in found.primary_key) == want or want in found.unique


def compare_target(
    fields: Sequence[Column],
    primary_key: Sequence[str],
    found: Reflected,
    column_type: Callable[[Column], sa.types.TypeEngine[Any]],
    dialect: sa.engine.Dialect,
) -> TableCheck:
    """An existing target against the declared ``fields``: every column that would not hold
    their values, a NOT NULL column for a nullable field, a key it cannot merge by, a column
    it has besides them that every insert would have to fill, and the fields it lacks."""
    problems: list[Problem] = []
    present, missing = _matched(fields, found)
    for col, got in present:
        problem = column_problem(col, column_type(col), got["type"], dialect)
        problem = problem or _charset_problem(col, got["type"], found.charset, dialect)
        if problem is not None:
            problems.append(problem)
        elif col.nullable and col.name not in primary_key and not got.get("nullable", True):
            label = declared_label(col)
            problems.append(
                Problem(col.name, f"{label} null", "not null", NARROWER, "NULLs would be refused")
            )
    if primary_key and not _has_key(found, primary_key):
        key = ",".join(primary_key)
        got_key = ",".join(found.primary_key)
        problems.append(
            Problem(
                f"({key})",
                f"primary key ({key})",
                f"primary key ({got_key})" if got_key else "no primary key or unique index on it",
                INCOMPATIBLE,
                "rows could not be merged by key: they would be duplicated or refused",
            )
        )
    declared = {f.name.lower() for f in fields}
    for c in found.columns:
        if c["name"].lower() in declared or c.get("nullable", True):
            continue
        if c.get("default") is not None or c.get("autoincrement") is True or c.get("identity"):
            continue
        if c["name"].lower() in (k.lower() for k in found.primary_key):
            continue  # the key check above names it
        problems.append(
            Problem(
                c["name"],
                "not delivered",
                f"{_label(c['type'], dialect)} not null without a default",
                INCOMPATIBLE,
                "every insert would be refused",
            )
        )
    return TableCheck(True, tuple(problems), tuple(missing))


def _charset_problem(
    col: Column, found: sa.types.TypeEngine[Any], default: str | None, dialect: sa.engine.Dialect
) -> Problem | None:
    """A MariaDB/MySQL text column in a character set narrower than utf8mb4."""
    if dialect.name != "mysql" or col.type not in ("varchar", "char", "text"):
        return None
    charset = getattr(found, "charset", None) or default
    if not charset or charset.lower().startswith("utf8mb4"):
        return None
    return Problem(
        col.name,
        declared_label(col),
        f"{_label(found, dialect).split(' character set ')[0]} character set {charset}",
        INCOMPATIBLE,
        "it cannot hold every character: 𠮷 (U+20BB7) and the other CJK extensions need utf8mb4",
    )


def compare_source(
    fields: Sequence[Column],
    primary_key: Sequence[str],
    found: Reflected,
    column_type: Callable[[Column], sa.types.TypeEngine[Any]],
    dialect: sa.engine.Dialect,
) -> TableCheck:
    """A provider's table against the declared ``fields``: the columns it lacks, those whose
    values would not fit the declared type, and whether a constraint keeps the key unique."""
    present, missing = _matched(fields, found)
    problems = [
        p
        for col, got in present
        if (p := column_problem(col, column_type(col), got["type"], dialect, source=True))
    ]
    keyed = not primary_key or _has_key(found, primary_key)
    return TableCheck(True, tuple(problems), tuple(missing), keyed)


def _matched(
    fields: Sequence[Column], found: Reflected
) -> tuple[list[tuple[Column, dict[str, Any]]], list[str]]:
    """Each declared field with the table's column of that name (names compared without
    case, as the dialects fold them), and the names of the fields the table lacks."""
    have = {c["name"].lower(): c for c in found.columns}
    present = [(col, have[col.name.lower()]) for col in fields if col.name.lower() in have]
    missing = [col.name for col in fields if col.name.lower() not in have]
    return present, missing
