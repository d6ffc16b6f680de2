"""BuildCatalog: validate the execution input, find the granules, write the manifest of items to S3."""

import functools

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.catalog import build_catalog
from granulemap.events import CatalogEvent
from granulemap.executions import running_before
from granulemap.observability import logger, metrics, tracer
from granulemap.settings import load_settings
from granulemap.storage import Bucket


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
@event_parser(model=CatalogEvent)
def handler(event: CatalogEvent, context: LambdaContext) -> dict:
    logger.append_keys(run=event.execution)  # every line of this invocation names its run
    settings = load_settings()
    earlier = None  # an event of its own (events/catalog_builder.json) names no state machine to look in
    if event.state_machine and event.execution_arn:
        earlier = functools.partial(running_before, event.state_machine, event.execution_arn, event.started)
    output = build_catalog(event.input, event.execution, settings, Bucket(settings.bucket), now=event.started,
                           earlier_runs=earlier)
    metrics.add_metric(name="CatalogItems", unit=MetricUnit.Count, value=output.catalog.count)
    logger.info("catalog written", extra={"items": output.catalog.count, "manifest": output.catalog.key})
    return output.model_dump(mode="json")
