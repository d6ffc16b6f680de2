"""FetchCredentials: temporary DAAC S3 credentials, stored encrypted; returns only their reference and expiry."""

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from granulemap.credentials import fetch_credentials
from granulemap.events import CredentialsEvent
from granulemap.observability import logger, tracer
from granulemap.settings import load_settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@event_parser(model=CredentialsEvent)
def handler(event: CredentialsEvent, context: LambdaContext) -> dict | None:
    logger.append_keys(run=event.run.run_id)  # every line of this invocation names its run
    ref = fetch_credentials(event.run.daac, load_settings())
    return None if ref is None else ref.model_dump(mode="json")
