"""The OpenLineage run events of a delivery: START when a run is planned (or resumed), then
COMPLETE or FAIL once it is recorded, and one pair for each batch of api calls the gateway
stored.

The job is the resource (``api:<code>`` for an api resource) in ``$OPENLINEAGE_NAMESPACE``
(``city-exchange``); the run id is a UUID derived from the installation id and the engine's run
id, so that the START of an Airflow plan task and the COMPLETE of its record task, in two
processes, name one run. The input is the provider's dataset (its schema: the resource's
fields; on the closing event also the validate step's rules as data-quality assertions); each
planned subscriber is an output (its granted fields as schema, column lineage from the source
column, rows and bytes delivered). The events are built with openlineage-python's classes and
hold ids, names and counts, never data or a credential.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    OutputDatasetFacet,
    RunFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
)

from exchange.catalog.model import Catalog, Field, Resource
from exchange.lineage.naming import DatasetRef

PRODUCER = "urn:city-exchange:engine"
ENGINE = "city-exchange"
DEFAULT_NAMESPACE = "city-exchange"
#: Fixed: every installation's run UUIDs are derived under it (with the installation id).
RUN_UUID_NAMESPACE = uuid.UUID("6f1d4c1e-8a53-4d5e-9a3b-2f0c6c1e7a10")


def job_namespace() -> str:
    return os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE


def job_name(resource: Resource) -> str:
    return f"api:{resource.code}" if resource.kind == "api" else resource.code


def run_uuid(installation: str, run_id: str) -> str:
    """The OpenLineage run id of the engine's run ``run_id`` (the same in every process)."""
    return str(uuid.uuid5(RUN_UUID_NAMESPACE, f"{installation}/{run_id}"))


def engine_version() -> str:
    try:
        return importlib.metadata.version("city-exchange")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Output:
    """One subscriber's dataset and what the run did to it."""

    dataset: DatasetRef
    #: Granted field -> the source field it comes from (tables; empty for files).
    columns: dict[str, str] = field(default_factory=dict)
    #: Granted fields whose values are masked on the way (their lineage says MASKED).
    masked: frozenset[str] = frozenset()
    rows: int | None = None  # rows merged, or files put (closing events only)
    size: int | None = None  # bytes, where known


@dataclass(frozen=True)
class Check:
    """One validate rule as a data-quality assertion: ``rule`` on ``column``, with the rows
    it quarantined (0: it passed)."""

    rule: str
    column: str | None
    violations: int


def _type_of(f: Field) -> str:
    if f.length is not None:
        return f"{f.type}({f.length})"
    if f.precision is not None:
        return f"{f.type}({f.precision},{f.scale or 0})"
    return f.type


def schema_facet(fields: Sequence[Field]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=f.name, type=_type_of(f), description=f.title or None, ordinal_position=i
            )
            for i, f in enumerate(fields, start=1)
        ]
    )


def parent_facet() -> parent_run.ParentRunFacet | None:
    """From ``$OPENLINEAGE_PARENT_ID`` (and ``$OPENLINEAGE_ROOT_PARENT_ID``), each
    ``{namespace}/{job}/{run_uuid}`` (a job name may hold ``/``); None when unset or malformed."""
    parent = _split(os.environ.get("OPENLINEAGE_PARENT_ID", ""))
    if parent is None:
        return None
    root = _split(os.environ.get("OPENLINEAGE_ROOT_PARENT_ID", ""))
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=parent[2]),
        job=parent_run.Job(namespace=parent[0], name=parent[1]),
        root=(
            parent_run.Root(
                run=parent_run.RootRun(runId=root[2]),
                job=parent_run.RootJob(namespace=root[0], name=root[1]),
            )
            if root is not None
            else None
        ),
    )


def _split(text: str) -> tuple[str, str, str] | None:
    namespace, _, rest = text.strip().partition("/")
    job, _, run = rest.rpartition("/")
    if not namespace or not job:
        return None
    try:
        return namespace, job, str(uuid.UUID(run))
    except ValueError:
        return None


def run_facets(error: str | None = None) -> dict[str, RunFacet]:
    facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=engine_version(), name=ENGINE, openlineageAdapterVersion=_client_version()
        )
    }
    parent = parent_facet()
    if parent is not None:
        facets["parent"] = parent
    if error is not None:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error, programmingLanguage="python"
        )
    return facets


def _client_version() -> str:
    try:
        return importlib.metadata.version("openlineage-python")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def column_lineage(
    source: DatasetRef, out: Output
) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """Each granted column from its source column: IDENTITY, or MASKED where it is masked."""
    lineage = {}
    for target, src in out.columns.items():
        masked = target in out.masked
        lineage[target] = column_lineage_dataset.Fields(
            inputFields=[
                column_lineage_dataset.InputField(
                    namespace=source.namespace,
                    name=source.name,
                    field=src,
                    transformations=[
                        column_lineage_dataset.Transformation(
                            type="DIRECT",
                            subtype="TRANSFORMATION" if masked else "IDENTITY",
                            description="masked" if masked else "copied as is",
                            masking=masked,
                        )
                    ],
                )
            ],
            transformationType="MASKED" if masked else "IDENTITY",
            transformationDescription="masked" if masked else "copied as is",
        )
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=lineage)


def assertions_facet(
    checks: Iterable[Check],
) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
        assertions=[
            data_quality_assertions_dataset.Assertion(
                assertion=c.rule,
                success=c.violations == 0,
                column=c.column,
                severity="error",  # a violating row is quarantined, never delivered
                actual=str(c.violations),
                expected="0",
            )
            for c in checks
        ]
    )


@dataclass(frozen=True)
class EventSpec:
    """What one event says, before it is built."""

    state: RunState
    run_id: str  # the OpenLineage run UUID
    job: str
    source: DatasetRef
    source_fields: tuple[Field, ...]
    outputs: tuple[Output, ...]
    fields_of: dict[DatasetRef, tuple[Field, ...]]
    checks: tuple[Check, ...] | None = None  # closing events only
    error: str | None = None
    closing: bool = False
    at: str = ""


def build(spec: EventSpec) -> RunEvent:
    """The event, with openlineage-python's classes."""
    input_facets: dict[str, InputDatasetFacet] = {}
    if spec.checks is not None:
        input_facets["dataQualityAssertions"] = assertions_facet(spec.checks)
    source = InputDataset(
        namespace=spec.source.namespace,
        name=spec.source.name,
        facets={"schema": schema_facet(spec.source_fields)} if spec.source_fields else {},
        inputFacets=input_facets,
    )
    outputs = []
    for out in spec.outputs:
        facets: dict[str, DatasetFacet] = {}
        fields = spec.fields_of.get(out.dataset, ())
        if fields:
            facets["schema"] = schema_facet(fields)
        if out.columns:
            facets["columnLineage"] = column_lineage(spec.source, out)
        output_facets: dict[str, OutputDatasetFacet] = {}
        if spec.closing and out.rows is not None:
            output_facets["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=out.rows, size=out.size
                )
            )
        outputs.append(
            OutputDataset(
                namespace=out.dataset.namespace,
                name=out.dataset.name,
                facets=facets,
                outputFacets=output_facets,
            )
        )
    return RunEvent(
        eventType=spec.state,
        eventTime=spec.at or now_iso(),
        run=Run(runId=spec.run_id, facets=run_facets(spec.error)),
        job=Job(
            namespace=job_namespace(),
            name=spec.job,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="CITY_EXCHANGE", jobType="JOB"
                )
            },
        ),
        inputs=[source],
        outputs=outputs,
        producer=PRODUCER,
    )


def granted_fields(catalog: Catalog, resource: Resource, names: Iterable[str]) -> tuple[Field, ...]:
    """The resource's fields among ``names``, in the resource's order."""
    wanted = set(names)
    return tuple(f for f in resource.fields if f.name in wanted)
