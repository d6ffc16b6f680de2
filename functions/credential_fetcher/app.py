"""FetchCredentials: temporary DAAC S3 credentials, stored encrypted; returns only their reference and expiry."""

import datetime as dt

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.credentials import edl_token_time_left, fetch_credentials
from granulemap.events import CredentialsEvent
from granulemap.observability import SERVICE, logger, metrics, tracer
from granulemap.settings import load_settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@event_parser(model=CredentialsEvent)
def handler(event: CredentialsEvent, context: LambdaContext) -> dict | None:
    logger.append_keys(run=event.run.run_id)  # every line of this invocation names its run
    settings = load_settings()
    ref = fetch_credentials(event.run.daac, settings)
    if ref is None:
        return None
    left = edl_token_time_left(settings)  # template.yaml's EarthdataTokenExpiresSoonAlarm watches it
    if left is not None:  # its one metric, printed at once (no empty flush to warn of in a run without a token)
        with single_metric(name="EarthdataTokenDaysLeft", unit=MetricUnit.NoUnit, value=left / dt.timedelta(days=1),
                           namespace=metrics.namespace, default_dimensions={"service": SERVICE}):
            pass
    return ref.model_dump(mode="json")
