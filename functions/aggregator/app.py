"""Aggregate: per-item results → the products and summary.json in S3; fails the run above the tolerance."""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.aggregation import aggregate, counted
from granulemap.models import AggregatorEvent
from granulemap.observability import logger, metrics, tracer
from granulemap.settings import load_settings
from granulemap.storage import Bucket


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
@event_parser(model=AggregatorEvent)
def handler(event: AggregatorEvent, context: LambdaContext) -> dict:
    logger.append_keys(run=event.run.run_id)  # every line of this invocation names its run
    settings = load_settings()
    summary = aggregate(event, Bucket(settings.bucket))
    counts = {"items": summary.items.model_dump()}
    if summary.granules is not None:
        counts["granules"] = summary.granules.model_dump()
    for unit, values in counts.items():
        for name, value in values.items():
            metrics.add_metric(name=f"Run{unit.capitalize()}{name.capitalize()}", unit=MetricUnit.Count, value=value)
    logger.info("run aggregated", extra={"status": summary.status, **counts})
    # What the tolerance counted, for the state machine's AnyFailedWithinTolerance.
    tolerated, unit = counted(summary.items, summary.granules)
    failed = {"unit": unit, "count": tolerated.failed, "of": tolerated.total}
    return {"status": summary.status, **counts, "failed": failed, "outputs": summary.outputs}
