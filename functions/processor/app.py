"""Processor: one item of the Distributed Map → its result in S3; or, after the last retry, its failure record."""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.credentials import load_credentials, refresher
from granulemap.events import ProcessorInvocation
from granulemap.models import FailureEvent
from granulemap.observability import logger, metrics, tracer
from granulemap.processing import process_item, record_failure
from granulemap.settings import load_settings
from granulemap.storage import Bucket


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
@event_parser(model=ProcessorInvocation)
def handler(event: ProcessorInvocation, context: LambdaContext) -> dict:
    logger.append_keys(run=event.root.run.run_id, item=event.root.item.id)  # on every line of this invocation
    settings = load_settings()
    bucket = Bucket(settings.bucket)
    if isinstance(event.root, FailureEvent):
        record = record_failure(event.root, bucket)
        metrics.add_metric(name="ItemsFailed", unit=MetricUnit.Count, value=1)
        logger.warning("item failed", extra=record)
        return record
    refresh = refresher(settings, run=event.root.run.run_id) if event.root.run.credentials else None
    result = process_item(event.root, bucket, lambda ref: load_credentials(ref, settings, refresh=refresh))
    metrics.add_metric(name=f"Items{result.status.capitalize()}", unit=MetricUnit.Count, value=1)
    for failure in result.granule_failures:  # the item succeeded without them: make them visible
        logger.warning("granule failed", extra={"item": result.item, **failure.model_dump(), "trace": failure.trace})
    if result.granule_failures:
        metrics.add_metric(name="GranulesFailed", unit=MetricUnit.Count, value=len(result.granule_failures))
    return result.model_dump(mode="json", exclude_defaults=True)  # granule_failures only when there are some
