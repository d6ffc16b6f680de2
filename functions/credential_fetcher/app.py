"""FetchCredentials: temporary DAAC S3 credentials, stored encrypted; returns only their reference and expiry.
Called by the state machine for a run, and by Processors to refresh the stored credentials (which they may not)."""

import datetime as dt

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.credentials import credentials_for_run, edl_token_time_left, refresh_stored_credentials
from granulemap.events import CredentialsInvocation, RefreshEvent
from granulemap.observability import SERVICE, logger, metrics, tracer
from granulemap.settings import load_settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@event_parser(model=CredentialsInvocation)
def handler(event: CredentialsInvocation, context: LambdaContext) -> dict | None:
    settings = load_settings()
    if isinstance(event.root, RefreshEvent):
        asked = event.root.refresh
        if asked.run:
            logger.append_keys(run=asked.run)  # a refresh's lines are found with the run's (README, Logs Insights)
        return refresh_stored_credentials(asked.daac, asked.stale, settings).model_dump(mode="json")
    logger.append_keys(run=event.root.run.run_id)  # every line of this invocation names its run
    ref = credentials_for_run(event.root.run.daac, settings)
    if ref is None:
        return None
    left = edl_token_time_left(settings)  # template.yaml's EarthdataTokenExpiresSoonAlarm watches it
    if left is not None:  # its one metric, printed at once (no empty flush to warn of in a run without a token)
        with single_metric(name="EarthdataTokenDaysLeft", unit=MetricUnit.NoUnit, value=left / dt.timedelta(days=1),
                           namespace=metrics.namespace, default_dimensions={"service": SERVICE}):
            pass
    return ref.model_dump(mode="json")
