"""Processor: one item of the Distributed Map → its result in S3. (An item's final failure is stored by the state
machine itself: RecordFailure in statemachine/pipeline.asl.json.)"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.credentials import load_credentials, refresher
from granulemap.models import ProcessorEvent
from granulemap.observability import logger, metrics, tracer
from granulemap.processing import process_item
from granulemap.settings import load_settings
from granulemap.storage import Bucket


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
@event_parser(model=ProcessorEvent)
def handler(event: ProcessorEvent, context: LambdaContext) -> dict:
    logger.append_keys(run=event.run.run_id, item=event.item.id)  # on every line of this invocation
    settings = load_settings()
    bucket = Bucket(settings.bucket)
    refresh = refresher(settings, run=event.run.run_id) if event.run.credentials else None
    result = process_item(event, bucket, lambda ref: load_credentials(ref, settings, refresh=refresh))
    metrics.add_metric(name=f"Items{result.status.capitalize()}", unit=MetricUnit.Count, value=1)
    for failure in result.granule_failures:  # the item succeeded without them: make them visible
        logger.warning("granule failed", extra={"item": result.item, **failure.model_dump(), "trace": failure.trace})
    if result.granule_failures:
        metrics.add_metric(name="GranulesFailed", unit=MetricUnit.Count, value=len(result.granule_failures))
    return result.model_dump(mode="json", exclude_defaults=True)  # granule_failures only when there are some
