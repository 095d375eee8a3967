"""Tabular files (CSV, XLSX) as Arrow batches of the resource's declared fields.

Columns are matched to fields by name or by title (the Chinese header a department writes,
e.g. ``统一社会信用代码``). CSV text is decoded with the declared encoding, or one detected with
charset-normalizer (GBK and GB2312 are read as GB18030, their superset; a UTF-8 BOM is
dropped), and streamed in blocks: memory is bounded by the batch, not the file. XLSX is read
with python-calamine. Values are converted to the declared types; one that does not fit is an
error naming the file, the line and the field, like a table whose value does not fit.

``to_table`` writes the pulled files' rows to the run's ``extract/data.parquet``, so the
table pipeline's validate and load steps deliver them into subscribers' databases; where a key
is in two files, the later file's row is the one kept (``exchange.files.keys``).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.arrow_types import ConversionFailed, arrow_schema, conform, rows_to_batch
from exchange.catalog.files_spec import FilesSpec
from exchange.catalog.model import Field, Resource
from exchange.files.keys import Span, after_removal, file_order, supersede, without
from exchange.files.pull import note_parse_failed, parse_succeeded, pulled_files, staged_path
from exchange.files.push import record_files
from exchange.kernel.errors import BadInput, DataError
from exchange.kernel.faults import crashpoint
from exchange.runs.handle import RunHandle, set_step
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace
from quality.mask import MASK_OF_VALIDATOR, mask_values

_SAMPLE = 1 << 20
_GB_FAMILY = {"gb2312", "gbk", "gb18030", "hz", "cp936"}
_DECLARED = {"utf-8": "utf-8-sig", "gbk": "gbk", "gb18030": "gb18030"}
_PARSED = "parsed"  # the files' rows as read, before a later file's rows replace earlier ones


def detect_encoding(path: Path, declared: str = "auto") -> str:
    """The codec to read ``path`` with: the declared one, or detected from its first MiB."""
    if declared in _DECLARED:
        return _DECLARED[declared]
    with open(path, "rb") as fh:
        head = fh.read(_SAMPLE)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if len(head) == _SAMPLE:  # don't judge by a character cut in half at the end
        head = head[: head.rfind(b"\n") + 1] or head
    try:
        head.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError:
        pass
    import charset_normalizer  # here: only a file that is not UTF-8 needs it (25 ms to import)

    best = charset_normalizer.from_bytes(head).best()
    if best is None:
        raise BadInput(f"{path.name}: cannot tell the text encoding; declare files.encoding")
    enc = best.encoding.lower().replace("_", "")
    return "gb18030" if enc in _GB_FAMILY else best.encoding


def _column_map(headers: Sequence[str], fields: Sequence[Field], where: str) -> dict[int, Field]:
    """Header position -> field, matching the field's name or its title."""
    if not any(str(h or "").strip().lstrip("\ufeff") for h in headers):
        raise BadInput(f"{where} is empty: no header row")
    by_label: dict[str, Field] = {}
    for f in fields:
        by_label[f.name.strip().lower()] = f
        if f.title:
            by_label[f.title.strip().lower()] = f
    found: dict[int, Field] = {}
    for i, h in enumerate(headers):
        hit = by_label.get(str(h or "").strip().lstrip("\ufeff").lower())
        if hit is not None and hit not in found.values():
            found[i] = hit
    missing = [f for f in fields if f not in found.values()]
    if missing:
        names = ", ".join(f"{f.name!r}" + (f" ({f.title})" if f.title else "") for f in missing)
        raise BadInput(
            f"{where}: no column for field {names}; its columns are: "
            + ", ".join(str(h) for h in headers)
        )
    return found


def _shown(value: Any, field: str, fields: Sequence[Field]) -> str:
    """The failing value as an error shows it: an ID or phone number masked (the error is kept
    in the run and its audit event), like a quarantine reason's excerpt."""
    declared = next((f for f in fields if f.name == field), None)
    kind = MASK_OF_VALIDATOR.get(declared.rules.validator or "") if declared else None
    if kind is None or value is None:
        return repr(value)
    return repr(mask_values(pa.array([str(value)]), kind)[0].as_py())


def _data_error(where: str, line: int, exc: ConversionFailed, fields: Sequence[Field]) -> DataError:
    value = _shown(exc.value, exc.field, fields)
    return DataError(
        f"{where} line {line}: field {exc.field!r} value {value} does not fit: {exc.reason}"
    )


def read_csv(
    path: Path, spec: FilesSpec, fields: Sequence[Field], batch_rows: int, where: str
) -> Iterator[pa.RecordBatch]:
    """Stream a CSV file as batches of the declared fields."""
    encoding = detect_encoding(path, spec.encoding)
    with open(path, encoding=encoding, newline="") as fh:
        header = next(csv.reader(io.StringIO(fh.readline()), delimiter=spec.delimiter), [])
        if not any(h.strip().lstrip("\ufeff") for h in header) and fh.read(_SAMPLE).strip():
            raise BadInput(f"{where}: its first line is blank: no header row")
    mapping = _column_map(header, fields, where)
    names = [mapping[i].name if i in mapping else f"_ignored_{i}" for i in range(len(header))]
    schema = arrow_schema(fields)
    # Read as text, then convert with the engine's own rules (so errors name field and line).
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            encoding=encoding, column_names=names, skip_rows=1, block_size=4 << 20
        ),
        parse_options=pacsv.ParseOptions(delimiter=spec.delimiter),
        convert_options=pacsv.ConvertOptions(
            include_columns=[f.name for f in fields],
            column_types={f.name: pa.string() for f in fields},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    line = 2  # the first data line (header is line 1)
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            part = batch.slice(start, batch_rows)
            try:
                yield conform(part, schema)
            except ConversionFailed as exc:
                raise _data_error(where, line + exc.index, exc, fields) from None
            line += part.num_rows


def _cell(value: Any, field: Field) -> Any:
    """A spreadsheet cell as the value the field's type expects."""
    if value == "" or value is None:
        return None
    if field.type in ("varchar", "char", "text"):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # phone numbers and codes typed as numbers
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        return str(value)
    if field.type == "date" and isinstance(value, dt.datetime):
        return value.date()
    if field.type in ("smallint", "integer", "bigint") and isinstance(value, float):
        return int(value) if value.is_integer() else value
    if field.type == "decimal" and isinstance(value, float):
        return str(value)
    return value


def read_xlsx(
    path: Path, spec: FilesSpec, fields: Sequence[Field], batch_rows: int, where: str
) -> Iterator[pa.RecordBatch]:
    """The first (or the named) sheet of an XLSX file as batches of the declared fields."""
    from python_calamine import CalamineWorkbook

    wb = CalamineWorkbook.from_path(str(path))
    try:
        sheet = wb.get_sheet_by_name(spec.sheet) if spec.sheet else wb.get_sheet_by_index(0)
    except Exception as exc:  # calamine raises its own error types for a missing sheet
        raise BadInput(f"{where}: {exc}") from None
    rows = iter(sheet.iter_rows())
    header = next(rows, [])
    mapping = _column_map([str(h) for h in header], fields, where)
    order = sorted(mapping, key=lambda i: fields.index(mapping[i]))
    schema = arrow_schema(fields)
    buf: list[list[Any]] = []
    line = 2

    def flush() -> pa.RecordBatch:
        try:
            return rows_to_batch(buf, schema)
        except ConversionFailed as exc:
            raise _data_error(where, line + exc.index, exc, fields) from None

    for row in rows:
        if not any(v not in ("", None) for v in row):
            continue  # blank rows at the end of a sheet
        buf.append([_cell(row[i] if i < len(row) else None, mapping[i]) for i in order])
        if len(buf) >= batch_rows:
            yield flush()
            line += len(buf)
            buf = []
    if buf:
        yield flush()


def read_tabular(path: Path, resource: Resource, where: str) -> Iterator[pa.RecordBatch]:
    """The file's rows; a file that is not what ``files.format`` says is a ``DataError``
    naming it (never the reader's traceback)."""
    spec = resource.files
    assert spec is not None
    reader = read_xlsx if spec.format == "xlsx" else read_csv
    try:
        yield from reader(path, spec, resource.fields, resource.batch_size, where)
    except UnicodeDecodeError as exc:
        advice = (
            f"the file is not in the declared encoding {spec.encoding}"
            if spec.encoding and spec.encoding != "auto"
            else "declare files.encoding"
        )
        raise DataError(f"{where}: not {exc.encoding} text at byte {exc.start}; {advice}") from None
    except pa.ArrowInvalid as exc:  # pyarrow's CSV reader: a line with more or fewer cells
        # Only the reason: pyarrow quotes the offending line, which may hold personal data.
        reason = str(exc).splitlines()[0].removeprefix("CSV parse error: ").split(": ")[0]
        line = _uneven_line(path, spec) if spec.format == "csv" else None
        at = f" line {line}" if line else ""
        raise DataError(
            f"{where}{at}: not a readable {spec.format.upper()} file: {reason}"
        ) from None


def _uneven_line(path: Path, spec: FilesSpec) -> int | None:
    """The line of the first record whose cell count differs from the header's (pyarrow's
    streaming reader does not say): only read once a parse has already failed."""
    try:
        with open(path, encoding=detect_encoding(path, spec.encoding), newline="") as fh:
            rows = csv.reader(fh, delimiter=spec.delimiter)
            width = len(next(rows, []))
            for row in rows:
                if row and len(row) != width:
                    return rows.line_num
    except (UnicodeDecodeError, csv.Error):
        return None
    return None


def how_to_go_on(code: str) -> str:
    """What a terminal parse error of a file run adds: the run stays failed until then."""
    return (
        f"fix the file at the source and run again (`exchange run {code}` pulls it again), "
        f"or drop this run with `exchange run {code} --restart`"
    )


def to_table(ws: Workspace, run: RunHandle) -> int:
    """Parse the pulled files some table subscriber needs into ``extract/data.parquet``, where
    the table steps (validate, load) take them up: in file order, less the rows a later
    file's row of the same key replaces (``exchange.files.keys``)."""
    rd, resource = run.dir, run.resource
    if rd.is_done("extract"):
        return int(rd.read_done("extract")["rows"])
    table_subscribers = {d.subscription_id for d in run.plan.tables()}
    pulled = pulled_files(rd)
    wanted = sorted(
        (f for f in run.plan.files if f.path in pulled and table_subscribers & set(f.subscribers)),
        key=lambda f: file_order(f.path, f.mtime),
    )
    rd.reset("extract", _PARSED)
    spans: list[Span] = []
    schema = arrow_schema(resource.fields)
    with rd.writer(_PARSED, schema) as writer:
        for f in wanted:
            where = f"resource {resource.code} file {f.path}"
            start = spans[-1].end if spans else 0
            rows = 0
            try:
                for batch in read_tabular(staged_path(rd, f.path), resource, where):
                    writer.write_batch(batch)
                    rows += batch.num_rows
            except DataError as exc:  # terminal: the run stays failed until the file is fixed
                note_parse_failed(rd, f.path)
                raise DataError(f"{exc}; {how_to_go_on(resource.code)}") from None
            except BadInput as exc:
                note_parse_failed(rd, f.path)
                raise BadInput(f"{exc}; {how_to_go_on(resource.code)}") from None
            spans.append(Span(f.path, f.mtime, start, start + rows))
    parse_succeeded(rd)
    replaced = supersede(rd, _PARSED, resource, spans)
    rows = _keep(rd, schema, resource.batch_size, replaced.rows)
    rd.mark_done(
        "extract",
        {
            "rows": rows,
            "high": None,
            "files": [f.path for f in wanted],
            "replaced": len(replaced.rows),
            "notes": list(replaced.notes),
            # validate judges these without duplicate_key (exchange.files.keys)
            "standing": after_removal(replaced.standing, replaced.rows),
        },
    )
    set_step(ws, run.id, "extract", rows_extracted=rows)
    crashpoint("extract:done")
    return rows


def _keep(rd: RunDir, schema: pa.Schema, batch_rows: int, replaced: np.ndarray) -> int:
    """The parsed rows less ``replaced`` become the extract; its row count."""
    parsed = rd.part(_PARSED)
    if not len(replaced):  # the usual case: the parsed rows are the extract as they are
        rows = pq.ParquetFile(parsed).metadata.num_rows
        os.replace(parsed.parent, rd.part("extract").parent)
        return int(rows)
    rows, offset = 0, 0
    with rd.writer("extract", schema) as writer:
        for batch in rd.batches(_PARSED, batch_size=batch_rows):
            kept = without(batch, offset, replaced)
            writer.write_batch(kept)
            rows += kept.num_rows
            offset += batch.num_rows
    rd.reset(_PARSED)
    return rows


def record_parsed(ws: Workspace, run: RunHandle, subscription_id: int) -> None:
    """Ledger rows for the files whose rows were merged into a table subscriber: each file
    version reaches it once, whichever way it went."""
    pulled = pulled_files(run.dir)
    parsed = set(run.dir.read_done("extract").get("files", []))
    mine = [pulled[f.path] for f in run.plan.files_for(subscription_id) if f.path in parsed]
    record_files(ws, run.id, subscription_id, mine)
